"""Command lines rebuilt for a shell, to print: an override quoted so Hydra reads its value back whole,
and the flags that find a run's configs again (resume advice, a sweep's report, composing hints)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ttt_mm.tasks.common import CONF_DIR
from ttt_mm.tasks.overrides import as_typed, override_key, sweep_on_command_line


def shell_override(key: str, value: str, quoted: bool = False) -> str:
    """``key=value`` as one shell argument whose value Hydra reads back whole: quoted for Hydra where
    its grammar would split or parse it (a comma makes a sweep, brackets a list), or always (``quoted``),
    then for the shell."""
    if quoted or not re.fullmatch(r"[A-Za-z0-9_/.@:+-]+", value):  # (Hydra's grammar: ASCII alone, no ~)
        value = _hydra_quoted(value)
    argument = f"{key}={value}"
    if set(argument) & set("$`\\!"):  # (what a shell's double quotes would expand)
        return shlex.quote(argument)
    return '"' + argument.replace('"', '\\"') + '"' if value[0] in "'\"" else argument


def _hydra_quoted(value: str) -> str:
    """``value`` as a Hydra quoted string that reads back as it is: in single quotes (double where it
    holds a single one and no double), the quote escaped, the backslashes before a quote, ``${`` or the
    end doubled, and ``${`` escaped (Hydra resolves interpolations inside quotes: ``/runs/${USER}``)."""
    quote = '"' if "'" in value and '"' not in value else "'"
    body = re.sub(rf"(\\+)(?={quote}|\$\{{|$)", lambda run: run.group(1) * 2, value)
    return quote + body.replace(quote, "\\" + quote).replace("${", "\\${") + quote


def config_flags(hydra_config: DictConfig) -> list[str]:
    """The arguments, quoted for a shell, that find a run's configs again (``hydra_config``: its ``hydra``
    node): each ``--config-dir`` (a config source Hydra records as given on the command line), its
    ``hydra.searchpath`` overrides, a ``--config-path`` that is not ttt-mm's ``conf``, and ``--config-name``
    where the config is not one of ttt-mm's own or comes from that path. A printed command without them
    cannot compose a run configured from the user's own config folder."""
    flags, main = [], None
    for source in OmegaConf.select(hydra_config, "runtime.config_sources", default=None) or ():
        if source.get("schema") == "file" and source.get("provider") == "command-line":
            flags += ["--config-dir", shlex.quote(str(source.path))]
        elif source.get("schema") == "file" and source.get("provider") == "main":
            main = str(source.path)
    hydras = as_typed(OmegaConf.select(hydra_config, "overrides.hydra", default=None))
    flags += [shlex.quote(o) for o in hydras if override_key(o) == "hydra.searchpath"]
    if main is not None and not _a_copy_of_ttt_mms_conf(main):  # (-cp: the user's own primary config)
        flags += ["--config-path", shlex.quote(main)]
    name = OmegaConf.select(hydra_config, "job.config_name", default=None)
    if name and (not (Path(CONF_DIR) / f"{name}.yaml").is_file() or "--config-path" in flags):
        flags += ["--config-name", shlex.quote(str(name))]
    return flags


def _a_copy_of_ttt_mms_conf(folder: str) -> bool:
    """Whether ``folder`` is ttt-mm's ``conf`` (this one, or another checkout's: a run of an older copy
    resumed by this one) rather than a folder of the user's own given with ``--config-path``."""
    if os.path.realpath(folder) == os.path.realpath(CONF_DIR):
        return True
    own = [p.relative_to(CONF_DIR) for p in Path(CONF_DIR).glob("*/*.yaml")]
    return all((Path(folder) / p).is_file() for p in own) and (Path(folder) / "train.yaml").is_file()


def quoted_override(override: str) -> str | None:
    """``override`` as a shell argument whose value Hydra reads as one quoted string (in single quotes,
    or double where the value holds a single one); None where the value starts with a quote (one left
    open, most likely) or a bracket (a list or dict), holds a double quote or what a shell's double
    quotes expand, or, in a sweep, a comma (values to sweep): quoted, it would mean another thing. A
    leading ``~`` is written as the home folder it stands for: quoted, no shell would expand it."""
    key, _, value = override.partition("=")
    if not value or value[0] in "'\"[{" or set(value) & set('$`\\!"') or (sweep_on_command_line() and "," in value):
        return None
    home = value == "~" or value.startswith("~/")  # (no shell expands it after such a key's =, nor quoted)
    return shell_override(key, os.path.expanduser(value) if home else value, quoted=True)
