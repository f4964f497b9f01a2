"""``flaretune site-policy WORKSPACE``: allow flaretune's components at a site (simulator, POC, startup kits)."""


def _run(args) -> int:
    from flaretune.provisioning.policy import allow_in_workspace

    for path in allow_in_workspace(args.workspace):
        print(f"allowed 'flaretune.' components in {path}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "site-policy",
        help="add 'flaretune.' to the class_allow_list of a simulator workspace, a POC workspace or startup kits",
    )
    parser.add_argument("workspace", help="simulator workspace (-w), POC workspace, or a folder of startup kits")
    parser.set_defaults(func=_run)
