"""``skmpsae export``: a fitted model in another library's format (SAELens)."""

from pathlib import Path

from .common import _emit
from .inputs import _load_model


def add_parser(commands):
    export = commands.add_parser(
        "export",
        help="export a fitted model to SAELens's directory layout",
        description="Write MODEL in the layout sae_lens.SAE.load_from_disk reads (cfg.json + "
        "sae_weights.safetensors). The hook name and model name default to those recorded "
        "when the training activations were captured.",
    )
    export.add_argument(
        "model", metavar="MODEL", help="a .safetensors or .joblib file written by 'skmpsae fit'"
    )
    export.add_argument("--format", choices=["saelens"], default="saelens", help="default: saelens")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="created if needed")
    export.add_argument(
        "--hook-name",
        default=None,
        help="stored as the config's hook_name (default: the hookpoint recorded at capture)",
    )
    export.add_argument(
        "--model-name",
        default=None,
        help="stored as the config's model_name (default: the model recorded at capture)",
    )
    export.set_defaults(subparser=export, run=run)


def run(args):
    from .._io.saelens import to_saelens
    from .common import CommandError

    output = Path(args.output)
    if output.is_file() or output.suffix in (".safetensors", ".json", ".joblib", ".npz", ".npy"):
        raise CommandError(
            f"-o {output}: export writes a directory (cfg.json + sae_weights.safetensors); "
            "name a directory"
        )
    sae = _load_model(args.model)
    try:
        directory = to_saelens(
            sae, args.output, hook_name=args.hook_name, model_name=args.model_name
        )
    except FileExistsError as exc:
        raise CommandError(f"-o {args.output}: {exc}") from None
    provenance = getattr(sae, "provenance_", None) or {}
    hook = args.hook_name or provenance.get("hookpoint")
    where = f" (hook_name {hook!r})" if hook else " (no hook_name: pass --hook-name)"
    _emit(f"exported {type(sae).__name__} to {directory} in SAELens's layout{where}")
    return 0
