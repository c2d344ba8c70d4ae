# bash completion for vfioinit(1). Install: copy to
# /usr/share/bash-completion/completions/vfioinit (or source it from ~/.bashrc).
# The commands, the options, which command takes which and the names an option's value is
# one of (--generator: the generator registry's) are read from `vfioinit --help` (which is
# printed from the CLI's tables), once per shell, so the completion knows what the
# installed CLI has.

# From --help: the commands (_vfioinit_commands), every option (_vfioinit_options), those
# taking a value (_vfioinit_valued), those every command takes (the usage line's,
# _vfioinit_global), each command's ("options:" under the command's row,
# _vfioinit_takes[COMMAND]) and an option's "one of: A, B, C;" (_vfioinit_values[OPTION]).
declare -gA _vfioinit_takes _vfioinit_values
_vfioinit_load() {
  [ -n "${_vfioinit_options:-}" ] && return
  local help line cmd="" section="" opt="" text
  help=$("${1:-vfioinit}" --help 2>/dev/null) || return
  _vfioinit_commands="" _vfioinit_options="" _vfioinit_valued=" " _vfioinit_global=""
  declare -A texts
  while IFS= read -r line; do
    if [[ $line =~ ^usage:\ vfioinit ]]; then
      _vfioinit_global=$(grep -o -- '--[a-z][a-z-]*' <<<"${line%COMMAND*}" | tr '\n' ' ')
    elif [[ $line =~ ^([a-z]+)[\ :] ]]; then
      section=${BASH_REMATCH[1]} cmd=""
    elif [ "$section" = commands ]; then
      if [[ $line =~ ^\ \ ([a-z]+)\  ]]; then cmd=${BASH_REMATCH[1]}; _vfioinit_commands+="$cmd "; fi
      if [ -n "$cmd" ] && [[ $line == *options:* || -n ${_vfioinit_takes[$cmd]:-} ]]; then
        _vfioinit_takes[$cmd]+="$(grep -o -- '--[a-z][a-z-]*' <<<"${line#*options:}" | tr '\n' ' ')"
      fi
    elif [ "$section" = options ] && [[ $line =~ ^\ \ (-[a-z],\ )?(--[a-z][a-z-]*)(\ ([A-Z][^ ]*))? ]]; then
      opt=${BASH_REMATCH[2]}
      _vfioinit_options+="$opt "
      [ -n "${BASH_REMATCH[4]}" ] && _vfioinit_valued+="$opt "
      texts[$opt]=$line
    elif [ "$section" = options ] && [ -n "$opt" ]; then
      texts[$opt]+=" $line"  # the help text goes on, wrapped
    fi
  done <<<"$help"
  for opt in "${!texts[@]}"; do
    text=${texts[$opt]}
    if [[ $text == *"one of: "*";"* ]]; then
      text=${text#*one of: }; text=${text%%;*}
      _vfioinit_values[$opt]=${text//,/}
    fi
  done
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
    --kernel)
      for d in "$root"/lib/modules/*/ "$root"/usr/lib/modules/*/; do
        [ -d "$d" ] && d=${d%/} && words+="${d##*/} "
      done ;;
    *)
      # an option whose value is one of a list of names: those; any other taking a value: nothing
      if [ -n "${_vfioinit_values[$prev]:-}" ]; then words=${_vfioinit_values[$prev]}
      elif [[ $_vfioinit_valued == *" $prev "* ]]; then COMPREPLY=(); return
      # after the command, only the options it takes
      elif [[ $cur == -* && -n $cmd ]]; then words="$_vfioinit_global ${_vfioinit_takes[$cmd]:-}"
      elif [[ $cur == -* ]]; then words=$_vfioinit_options
      elif [ -z "$cmd" ]; then words=$_vfioinit_commands
      fi ;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}
complete -F _vfioinit vfioinit
