"""``python -m arb_pipeline.settings --markdown``: print docs/settings.md."""

import argparse

from arb_pipeline.settings.markdown import markdown

parser = argparse.ArgumentParser(prog="python -m arb_pipeline.settings", description=__doc__)
parser.add_argument("--markdown", action="store_true", help="print the settings table as Markdown")
args = parser.parse_args()
if args.markdown:
    print(markdown(), end="")
else:
    parser.print_help()
