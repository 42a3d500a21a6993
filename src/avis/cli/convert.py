"""`avis convert`: official AVISM (detectron2) checkpoints <-> avis checkpoints.

Official -> avis (needs --preset, since an official file does not say which model it is):
    avis convert --src AVISM_R50_IN.pth --preset avism_r50 --out avism_r50.pth
avis -> official (the config comes from the avis file):
    avis convert --src avism_r50.pth --out AVISM_R50_IN.pth [--naming vita]

Either way the weights are loaded strictly into the model they describe (every key used,
none missing, shapes checked, every value finite), so a successful conversion is a checked
one. A --preset given for an avis --src must fit its weights too. --out is checked before
anything is read and written atomically; an existing file is replaced only with --force.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAMINGS = ("avism", "vita")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official AVISM checkpoints to avis checkpoints and back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--src", type=Path, required=True, help="checkpoint to read")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument(
        "--preset",
        help="model preset of an official --src (avism_r50, avism_swinl, avism_tiny)",
    )
    parser.add_argument(
        "--naming",
        choices=NAMINGS,
        default="avism",
        help="prefix of the video module in an official --out: avism_module (IN models) "
        "or vita_module (COCO models); default avism",
    )
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from avis.io.outputs import check_input_file, check_output_file

    check_input_file(args.src, "--src checkpoint")
    check_output_file(args.out, force=args.force, inputs=[args.src])
    from avis.errors import CheckpointError
    from avis.io.atomic import save_torch_atomic
    from avis.models.checkpoint import (
        avis_to_official,
        check_state_dict,
        config_of,
        is_avis_checkpoint,
        load_model,
        meta_model,
        read_checkpoint,
        resolve_config,
        save_model,
        state_dict_of,
    )

    obj = read_checkpoint(args.src)
    if is_avis_checkpoint(obj):
        cfg = config_of(obj, str(args.src))
        state_dict = state_dict_of(obj, str(args.src))
        # keys and shapes only: no weights are materialised
        check_state_dict(meta_model(cfg, str(args.src)), state_dict, str(args.src))
        if args.preset is not None:  # it must describe these weights too
            claimed = meta_model(resolve_config(args.preset, str(args.src)), str(args.src))
            try:
                check_state_dict(claimed, state_dict, str(args.src))
            except CheckpointError as err:
                raise CheckpointError(f"--preset {args.preset} does not fit --src: {err}") from None
        official = avis_to_official(state_dict, args.naming, num_classes=cfg.num_classes)
        save_torch_atomic({"model": official}, args.out)
        print(f"wrote official checkpoint {args.out} ({len(official)} keys, {args.naming} names)")
    else:
        model, cfg = load_model(args.src, args.preset)
        save_model(args.out, model, cfg, source=str(args.src))
        print(
            f"wrote avis checkpoint {args.out} ({len(model.state_dict())} keys, preset {args.preset})"
        )
    return 0
