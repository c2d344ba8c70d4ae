# bash completion for vfioinit(1). Install: copy to
# /usr/share/bash-completion/completions/vfioinit (or source it from ~/.bashrc).
# The options are read from `vfioinit --help` (which is printed from the CLI's option
# table), once per shell, so the completion knows every option the installed CLI has.

_vfioinit_commands="status plan apply rebuild verify revert"
# The built-in generators (require("vfioinit").generator_names()).
_vfioinit_generators="mkinitcpio dracut initramfs-tools booster"

# "--root DIR" rows of --help -> "--root=DIR"-less words; options taking a value -> _vfioinit_valued.
_vfioinit_load() {
  [ -n "${_vfioinit_options:-}" ] && return
  local help line
  help=$("${1:-vfioinit}" --help 2>/dev/null) || return
  _vfioinit_options="" _vfioinit_valued=" "
  while IFS= read -r line; do
    if [[ $line =~ ^\ \ (-[a-z],\ )?(--[a-z][a-z-]*)(\ ([A-Z][^ ]*))? ]]; then
      _vfioinit_options+="${BASH_REMATCH[2]} "
      [ -n "${BASH_REMATCH[4]}" ] && _vfioinit_valued+="${BASH_REMATCH[2]} "
    fi
  done <<<"$help"
}

_vfioinit() {
  local cur prev root i
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  _vfioinit_load "${COMP_WORDS[0]}"
  root=/
  for ((i = 1; i < COMP_CWORD; i++)); do
    [ "${COMP_WORDS[i]}" = --root ] && root=${COMP_WORDS[i+1]}
  done
  local words="" d
  case $prev in
    --root) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    --generator) words=$_vfioinit_generators ;;
    --kernel)
      for d in "$root"/lib/modules/*/ "$root"/usr/lib/modules/*/; do
        [ -d "$d" ] && d=${d%/} && words+="${d##*/} "
      done ;;
    *)
      # any other option that takes a value: nothing to offer
      if [[ $_vfioinit_valued == *" $prev "* ]]; then COMPREPLY=(); return; fi
      if [[ $cur == -* ]]; then words=$_vfioinit_options; else words=$_vfioinit_commands; fi ;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}
complete -F _vfioinit vfioinit
