"""MkDocs hook: the generated pages (``iqa_tune.docgen``) and the changelog join the site on every build.

The reference is generated here rather than committed, so it cannot fall behind the code: a key added to the
config or a subcommand added to the parser is on the next build of the site, with its comment or --help.
"""

import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]  # the checkout this site documents, first on the path


def on_files(files, config):
    sys.path.insert(0, str(ROOT))
    from iqa_tune import docgen

    for path, text in docgen.pages().items():
        files.append(File.generated(config, path, content=text))
    changelog = (ROOT / "CHANGELOG.md").read_text().replace("](docs/", "](")  # its links, seen from docs/
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
