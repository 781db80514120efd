"""`meshctl completion bash|zsh`: a completion script (commands, flags, instance and service names
from the topology). `source <(meshctl completion bash)`; zsh runs the same through bashcompinit."""

from __future__ import annotations

from mesh.ctl import scaffold
from mesh.runner import topology

__all__ = ["script"]

COMMANDS = {"status": "", "routes": "--json", "call": "--as", "traces": "--service --last --errors --minutes",
            "trace": "--html --wait", "new": "service", "completion": "bash zsh"}


def script(shell: str) -> str:
    instances = " ".join(i.name for s in topology.SERVICES for i in s.instances)
    services = " ".join(f"{s.name}/" for s in topology.SERVICES if s.protocol == "grpc")
    names = " ".join(s.name for s in topology.SERVICES)
    cases = "\n".join(f"        {command}) words=\"{flags}\" ;;" for command, flags in COMMANDS.items())
    bash = f'''_meshctl() {{
    local cur prev words
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{' '.join(COMMANDS)} --help" -- "$cur")); return
    fi
    case "$prev" in
        --as|--service) COMPREPLY=($(compgen -W "{names}" -- "$cur")); return ;;
        --lang) COMPREPLY=($(compgen -W "{' '.join(scaffold.LANGUAGES)}" -- "$cur")); return ;;
    esac
    case "${{COMP_WORDS[1]}}" in
{cases}
    esac
    case "${{COMP_WORDS[1]}}" in
        routes) words="$words {instances}" ;;
        call) [ "$COMP_CWORD" -eq 2 ] && {{ compopt -o nospace 2>/dev/null; words="{services}"; }} ;;
        new) [ "$COMP_CWORD" -gt 2 ] && words="--lang" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _meshctl meshctl
'''
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + bash
    return bash
