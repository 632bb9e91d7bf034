#!/usr/bin/env bash
# Data-parallel scale-out on one machine, side by side in one run: training tokens/s of
# `mpirun -np 2` x 1 thread, 1 process x 2 threads and 1 process x 1 thread, for the two
# shapes of bench/compare.sh, with the allreduce's share of the step time.
#   bench/mpi-bench.sh [STEPS] [ROUNDS]        (run from anywhere; defaults 10 and 3)
# Needs the MPI build (cargo build --release -p igpt --features mpi) and openmpi-bin.
#
# Each run is `igpt pretrain` on the embedded Fashion-MNIST subset with a grid palette
# (the numbers do not depend on the pixels), STEPS+1 steps of which the first (warm-up)
# is not timed, no validation; `igpt` prints the throughput line parsed here. The three
# configurations run alternately, ROUNDS times, so that a load that comes and goes on a
# shared machine spreads over all of them; each figure is the median over the rounds
# (min-max in brackets). "allreduce" is the time in MPI_Allreduce as a share of the step
# time, least and most over the two ranks: the most includes waiting for the slower rank.
# A fourth row, "2 x 1 no MPI", is the control: two independent 1-thread processes pinned
# to cores 0 and 1 (taskset), each on half the batch, no communication; their summed
# tokens/s is what 2 ranks could reach on this machine with a free allreduce.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10}
rounds=${2:-3}
igpt=${IGPT:-target/release/igpt}
[ -x "$igpt" ] || { echo "build first: cargo build --release -p igpt --features mpi" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "no mpirun: apt-get install openmpi-bin libopenmpi-dev" >&2; exit 1; }
data=data/fashion-mnist-subset
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$igpt" palette grid --channels 3 --levels 8 --out "$tmp/k512.pal" >/dev/null
"$igpt" palette grid --channels 1 --levels 16 --out "$tmp/k16.pal" >/dev/null
# name, batch, the rest of the shape
shapes=(
  "a 8 --layers 4 --width 128 --heads 4 --side 16 --palette $tmp/k512.pal"
  "b 4 --layers 8 --width 256 --heads 8 --side 28 --palette $tmp/k16.pal"
)
configs=("2x1" "1x2" "1x1" "ctl")
mpirun_=(mpirun --allow-run-as-root --oversubscribe --bind-to core)

# One run: prints "tokens_per_s reduce_min reduce_max".
one() {
  local batch=$1 shape_args=$2 config=$3 out=$tmp/run-$RANDOM$RANDOM
  local args=(pretrain --data "$data" --train-images 64 --val-images 0
    --steps $((steps + 1)) --eval-every $((steps + 1)))
  local parse='s/^throughput: ([0-9.]+) tokens\/s.* allreduce ([0-9.]+)-([0-9.]+)%.*/\1 \2 \3/'
  # shellcheck disable=SC2086
  case $config in
    2x1) "${mpirun_[@]}" -np 2 "$igpt" "${args[@]}" $shape_args --batch "$batch" --threads 1 --out "$out" ;;
    1x2) "$igpt" "${args[@]}" $shape_args --batch "$batch" --threads 2 --out "$out" ;;
    1x1) "$igpt" "${args[@]}" $shape_args --batch "$batch" --threads 1 --out "$out" ;;
    ctl)
      taskset -c 0 "$igpt" "${args[@]}" $shape_args --batch $((batch / 2)) --threads 1 --out "$out-0" >"$out-0.txt" 2>/dev/null &
      taskset -c 1 "$igpt" "${args[@]}" $shape_args --batch $((batch / 2)) --threads 1 --out "$out-1" >"$out-1.txt" 2>/dev/null
      wait
      cat "$out-0.txt" "$out-1.txt" | grep '^throughput:' | sed -E "$parse" | awk '{s+=$1} END {print "throughput: " s " tokens/s, allreduce 0-0%"}'
      ;;
  esac 2>/dev/null | grep '^throughput:' | sed -E "$parse"
  rm -rf "$out" "$out"-*
}

declare -A tok red_lo red_hi
for r in $(seq "$rounds"); do
  for s in "${shapes[@]}"; do
    name=${s%% *}
    rest=${s#* }
    for c in "${configs[@]}"; do
      read -r t lo hi < <(one "${rest%% *}" "${rest#* }" "$c")
      tok[$name$c]+="$t "; red_lo[$name$c]+="$lo "; red_hi[$name$c]+="$hi "
      echo "round $r: shape $name, $c: $t tokens/s, allreduce $lo-$hi%" >&2
    done
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f [%.1f-%.1f]", m, v[1], v[NR]}'; }
med() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {printf "%.1f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: bench/mpi-bench.sh $steps $rounds ($steps timed steps per run, $rounds rounds, median [min-max])"
printf '%-6s %-24s %-26s %-9s %s\n' shape "ranks x threads" "tokens/s" "vs 1x1" "allreduce % of step (least-most rank)"
for s in "${shapes[@]}"; do
  name=${s%% *}
  base=$(echo "${tok[${name}1x1]}" | med)
  for c in "${configs[@]}"; do
    m=$(echo "${tok[$name$c]}" | med)
    red="-"
    [ "$c" = 2x1 ] && red="$(echo "${red_lo[$name$c]}" | med)-$(echo "${red_hi[$name$c]}" | med)"
    label="${c/x/ x } thread(s)"
    [ "$c" = ctl ] && label="2 x 1, no MPI (control)"
    printf '%-6s %-24s %-26s %-9s %s\n' "$name" "$label" "$(echo "${tok[$name$c]}" | median)" \
      "$(echo "$m / $base" | bc -l | xargs printf '%.2f')" "$red"
  done
done
