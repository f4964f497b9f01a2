"""jobs/split_ner as a FLARE recipe (flaretune.recipes): run it in an environment, or write this job folder.

    python jobs/split_ner/job.py --env sim --sites 2 --model tiny-minilm-ner --rounds 1 --max-steps 2
    python jobs/split_ner/job.py --env poc
    python jobs/split_ner/job.py --env prod --startup-kit KIT
    python jobs/split_ner/job.py --export jobs/split_ner

``sim`` is FLARE's SimEnv, ``poc`` a fresh POC network on this machine (PocEnv), ``prod`` a provisioned network
reached with an admin's startup kit (ProdEnv); ``--export`` rewrites meta.json and app/config/*.json. Before a
run the recipe lets the sites build flaretune's components (their class_allow_list): no ``flaretune
site-policy`` step. ``--help`` lists the options.
"""

import sys

from flaretune.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("split_ner"))
