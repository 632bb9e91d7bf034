"""Load an `igpt export-hf` folder with HuggingFace transformers and compare its logits
with igpt's (the JSON of `cargo run --example logits`).

    igpt export-hf --checkpoint models/fm-ar-6x192.safetensors --out fm-hf
    cargo run --example logits -- host/examples/images/bag.png > bag.json
    python host/examples/load_in_transformers.py fm-hf bag.json host/examples/images/bag.png

Needs torch and transformers. Prints the largest logit difference, the classifier's
output shape, and how many of HF's image-processor tokens equal igpt's for the image
(HF resizes bilinearly without a crop, igpt crops to a square and area-filters, so
they can differ where the image is not already at the model's side).
"""

import json
import sys

import torch
from PIL import Image
from transformers import (
    ImageGPTForCausalImageModeling,
    ImageGPTForImageClassification,
    ImageGPTImageProcessor,
)
from transformers.utils import logging

# A folder without a class head loads into the classifier with a new `score` (and an
# unused `lm_head`): expected here, so transformers' load report is silenced.
logging.set_verbosity_error()

folder, igpt_json, image = sys.argv[1:4]
ours = json.load(open(igpt_json))
tokens = torch.tensor(ours["tokens"])
want = torch.tensor(ours["logits"])

# The three lines a user needs:
model = ImageGPTForCausalImageModeling.from_pretrained(folder).eval()
processor = ImageGPTImageProcessor.from_pretrained(folder)
ids = processor(images=Image.open(image).convert("RGB"), return_tensors="pt")["input_ids"]

sos = model.config.vocab_size - 1
with torch.no_grad():
    inputs = torch.cat([torch.tensor([sos]), tokens[:-1]]).unsqueeze(0)
    got = model(input_ids=inputs).logits[0]
    print(f"logits {tuple(got.shape)}: max |HF - igpt| = {(got - want).abs().max().item():.3e}")
    clf = ImageGPTForImageClassification.from_pretrained(folder).eval()
    print(f"ImageGPTForImageClassification loads: logits {tuple(clf(input_ids=inputs).logits.shape)}")
same = (ids[0] == tokens).sum().item()
print(f"HF processor tokens equal to igpt's: {same} of {tokens.numel()}")
