"""`make run` helper: create `.env` from `.env.example` and generate an API key once.

Prints the generated key a single time; afterwards it lives only in `.env`.
"""

import os
import re
import secrets
import shutil
import sys
from pathlib import Path


def ensure_env(root: Path) -> str | None:
    """Make sure `.env` exists with an API_KEY; return a newly generated key, else None."""
    env_file, example = root / ".env", root / ".env.example"
    if not env_file.exists():
        shutil.copy(example, env_file)
    if os.environ.get("API_KEY"):
        return None
    text = env_file.read_text()
    match = re.search(r"^API_KEY=(.*)$", text, flags=re.MULTILINE)
    if match and match.group(1).strip():
        return None
    key = secrets.token_urlsafe(32)
    line = f"API_KEY={key}"
    text = re.sub(r"^API_KEY=.*$", line, text, flags=re.MULTILINE) if match else f"{text.rstrip()}\n{line}\n"
    env_file.write_text(text)
    env_file.chmod(0o600)
    return key


def main() -> int:
    root = Path.cwd()
    key = ensure_env(root)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    print(f"Quantum Trader on http://{host}:{port}")
    print(f"  Swagger UI:  http://{host}:{port}/docs   (readiness: /ready, metrics: /metrics)")
    print("  Auth:        send header  X-API-Key: <API_KEY from .env>  on every POST/PUT/PATCH/DELETE;")
    print("               in Swagger click 'Authorize' and paste it.")
    if key:
        print(f"  Generated API_KEY (stored in .env, shown only this once): {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
