#!/bin/bash
# The README command reference on a clean clone (not run by CI; ~10 min): the same flags,
# shortened where marked. Run from the repository root, with the
# Fashion-MNIST package installed. Ends with NEWCOMER-OK.
set -x
cd "$(dirname "$0")/.."
export FM=/usr/share/datasets/fashion-mnist
igpt() { target/release/igpt "$@"; }
cargo build --release -p igpt -q || exit 1
igpt info && igpt info --preset S --side 16 && igpt data --data $FM --split test || exit 1
igpt palette fit --data $FM --k 16 --side 14 --out fm16.pal --swatch fm16.png || exit 1
igpt palette fit --data data/cifar10-sample --split test --k 512 --out rgb512.pal || exit 1
igpt palette grid --channels 3 --levels 8 --out grid512.pal || exit 1
igpt palette show rgb512.pal --out swatch.png || exit 1
igpt tokenize --palette rgb512.pal --side 32 --preview preview.png data/photos/*.png | head -c 200; echo
# pretrain shortened: 20 steps instead of 3407
igpt pretrain --data $FM --palette fm16.pal --preset fw --objective ar --steps 20 \
    --batch 32 --lr 3e-3 --warmup 5 --eval-every 10 --val-images 100 --out runs/fm-ar || exit 1
igpt import-hf --config tests/fixtures/hf-imagegpt/tiny.json --weights tests/fixtures/hf-imagegpt/tiny.safetensors --out imagegpt.safetensors || exit 1
igpt init --palette grid512.pal --preset S --side 8 --seed 0 --out s8.safetensors --probe-head s8-head.json --probe-layer 12 || exit 1
# probes shortened with --train-images/--test-images
igpt probe --checkpoint runs/fm-ar/checkpoint.safetensors --data $FM --out runs/fm-ar/probe --train-images 2000 --test-images 500 || exit 1
igpt probe --checkpoint runs/fm-ar/checkpoint.safetensors --data $FM --raw-pixels --out runs/raw --train-images 2000 --test-images 500 || exit 1
igpt probe --checkpoint runs/fm-ar/checkpoint.safetensors --data $FM --labels-per-class 25 --out runs/low-25 --test-images 500 || exit 1
igpt finetune --checkpoint runs/fm-ar/checkpoint.safetensors --data $FM --steps 20 --lr 3e-4 --eval-every 10 --out runs/fm-ft --train-images 2000 --test-images 500 || exit 1
igpt sample --checkpoint runs/fm-ar/checkpoint.safetensors --n 16 --seed 1 --out samples.png || exit 1
igpt sample --checkpoint runs/fm-ar/checkpoint.safetensors --data $FM --complete-test 6 --keep-rows 7 --completions 4 --seed 2 --out complete.png || exit 1
igpt export --checkpoint runs/fm-ar/checkpoint.safetensors --probe runs/fm-ar/probe/probe-head.json --upto-probe-layer --out fm.igpt || exit 1
cp data/photos/*.png . 2>/dev/null; P=$(ls data/photos/*.png | head -2)
igpt classify --model fm.igpt $P || exit 1
igpt eval --model fm.igpt --data $FM --checkpoint runs/fm-ar/checkpoint.safetensors --limit 500 --nll-images 100 || exit 1
igpt export-vectors --model fm.igpt --data $FM --count 20 --out fm.vec || exit 1
igpt bench train --layers 4 --width 128 --heads 4 --side 16 --batch 8 --vocab 512 --steps 5 --threads 1 || exit 1
igpt bench infer --model fm.igpt --images 8 || exit 1
igpt demo --quick --out igpt-demo-quick || exit 1
igpt bench parity --device cpu --fixtures tests/fixtures/hf-imagegpt | tail -1 || exit 1
echo NEWCOMER-OK
