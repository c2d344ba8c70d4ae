# bash completion for vfioinit(1). Install: copy to
# /usr/share/bash-completion/completions/vfioinit (or source it from ~/.bashrc).
# The options, and which command takes which, are read from `vfioinit --help` (which is
# printed from the CLI's option table), once per shell, so the completion knows every
# option the installed CLI has.

_vfioinit_commands="status plan apply rebuild verify revert"
# The built-in generators (require("vfioinit").generator_names()).
_vfioinit_generators="mkinitcpio dracut initramfs-tools booster"

# From --help: every option (_vfioinit_options), those taking a value (_vfioinit_valued),
# those every command takes (the usage line's, _vfioinit_global) and each command's
# ("options:" under the command's row, _vfioinit_takes[COMMAND]).
declare -gA _vfioinit_takes
_vfioinit_load() {
  [ -n "${_vfioinit_options:-}" ] && return
  local help line cmd="" section=""
  help=$("${1:-vfioinit}" --help 2>/dev/null) || return
  _vfioinit_options="" _vfioinit_valued=" " _vfioinit_global=""
  while IFS= read -r line; do
    if [[ $line =~ ^usage:\ vfioinit ]]; then
      _vfioinit_global=$(grep -o -- '--[a-z][a-z-]*' <<<"${line%COMMAND*}" | tr '\n' ' ')
    elif [[ $line =~ ^([a-z]+)[\ :] ]]; then
      section=${BASH_REMATCH[1]} cmd=""
    elif [ "$section" = commands ]; then
      if [[ $line =~ ^\ \ ([a-z]+)\  ]]; then cmd=${BASH_REMATCH[1]}; fi
      if [ -n "$cmd" ] && [[ $line == *options:* || -n ${_vfioinit_takes[$cmd]:-} ]]; then
        _vfioinit_takes[$cmd]+="$(grep -o -- '--[a-z][a-z-]*' <<<"${line#*options:}" | tr '\n' ' ')"
      fi
    elif [ "$section" = options ] && [[ $line =~ ^\ \ (-[a-z],\ )?(--[a-z][a-z-]*)(\ ([A-Z][^ ]*))? ]]; then
      _vfioinit_options+="${BASH_REMATCH[2]} "
      [ -n "${BASH_REMATCH[4]}" ] && _vfioinit_valued+="${BASH_REMATCH[2]} "
    fi
  done <<<"$help"
}

_vfioinit() {
  local cur prev root i cmd
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  _vfioinit_load "${COMP_WORDS[0]}"
  root=/ cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    [ "${COMP_WORDS[i]}" = --root ] && root=${COMP_WORDS[i+1]}
    # the command: a word that is not an option nor an option's value
    if [[ " $_vfioinit_commands " == *" ${COMP_WORDS[i]} "* && $_vfioinit_valued != *" ${COMP_WORDS[i-1]} "* ]]; then
      cmd=${COMP_WORDS[i]}
    fi
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
      # after the command, only the options it takes
      if [[ $cur == -* && -n $cmd ]]; then words="$_vfioinit_global ${_vfioinit_takes[$cmd]:-}"
      elif [[ $cur == -* ]]; then words=$_vfioinit_options
      elif [ -z "$cmd" ]; then words=$_vfioinit_commands
      fi ;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}
complete -F _vfioinit vfioinit
