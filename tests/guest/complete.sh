# Runs the bash completion of losetup-fmt (the file given first) on a
# command line, as readline would with the cursor at its end, and prints
# the candidates, one per line:  complete.sh COMPLETION-FILE LINE
. /usr/share/bash-completion/bash_completion
. "$1"
shift
comp() {
	COMP_LINE=$1 COMP_POINT=${#1}
	read -ra COMP_WORDS <<<"$1"
	[[ $1 == *" " ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_losetup_fmt
	printf '%s\n' "${COMPREPLY[@]}"
}
comp "$@"
