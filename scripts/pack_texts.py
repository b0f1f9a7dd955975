"""Pack small text files (logs, JSON, cards, metrics) into one JSON {name: text}, so what comes back from
a lent machine stays within its file count; `--unpack` writes them out again.

    python3 scripts/pack_texts.py OUT.json FILE...        python3 scripts/pack_texts.py --unpack IN.json DIR
"""

import json
import sys
from pathlib import Path

if sys.argv[1] == "--unpack":
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in json.loads(Path(sys.argv[2]).read_text()).items():
        (out / name).write_text(text)
else:
    files = [Path(f) for f in sys.argv[2:] if Path(f).is_file() and Path(f).stat().st_size < 4 << 20]
    Path(sys.argv[1]).write_text(
        json.dumps({f"{f.parent.name}__{f.name}": f.read_text(errors="replace") for f in files})
    )
    print(f"packed {len(files)} files into {sys.argv[1]}")
