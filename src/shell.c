/*
** shell.c: core.shell_scan(text), a scanner for bash-style configuration files
** (mkinitcpio.conf, dracut.conf). It finds the top-level assignments and
** where every byte of their values sits, so Lua can edit a file with the
** fewest byte changes. It never runs anything: expansions (`$x`, `$(...)`,
** backticks, globs) are kept as written and flagged `dynamic`.
**
** Quoting follows bash: '...' is literal; "..." keeps the backslash except
** before $ ` " \ and newline; an unquoted backslash quotes the next byte and
** backslash-newline is a line continuation; `#` starts a comment only at the
** start of a word. Statements that are not assignments (commands, functions,
** if/for/while/case blocks) are skipped; assignments inside them, behind
** `&&`/`||`, or used as a command's environment are not top-level and are
** left out of the result (their lines are listed in `result.skipped`).
*/
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct Scan {
	const char *s;      /* the text */
	size_t n;           /* its length */
	size_t i;           /* current offset, 0-based */
	int line;           /* line of s[i], 1-based */
	char *out;          /* expanded bytes of the word(s) being read */
	size_t *src;        /* 0-based source offset of each out byte */
	size_t outn;
	int quoted;         /* the current word used quotes or escapes */
	int dynamic;        /* the current word needs the shell to expand */
	char quote;         /* first quote char of the current word, 0 if none */
	const char *err;    /* set on a syntax error */
	int errline;
	int heredoc;            /* a here-document body follows the next newline */
	int heredoc_strip;      /* <<- strips leading tabs */
	size_t heredoc_len;
	char delim[128];        /* its delimiter, quotes removed */
} Scan;


static int
is_blank(int c)
{
	return c == ' ' || c == '\t';
}


/* Bytes that end an unquoted word. */
static int
is_meta(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == ';' || c == '&'
		|| c == '|' || c == '(' || c == ')' || c == '<' || c == '>';
}


static int
is_name_start(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}


static int
is_name(int c)
{
	return is_name_start(c) || (c >= '0' && c <= '9');
}


static int
at(const Scan *sc, size_t k)
{
	return sc->i + k < sc->n ? (unsigned char)sc->s[sc->i + k] : -1;
}


static int
fail(Scan *sc, const char *msg, int line)
{
	if (sc->err == NULL) {
		sc->err = msg;
		sc->errline = line;
	}
	return -1;
}


static void
emit(Scan *sc, char c, size_t from)
{
	sc->out[sc->outn] = c;
	sc->src[sc->outn] = from;
	sc->outn++;
}


/* Copy s[from..sc->i) to out unchanged (an expansion kept as written). */
static void
emit_raw(Scan *sc, size_t from)
{
	size_t k;
	for (k = from; k < sc->i; k++)
		emit(sc, sc->s[k], k);
}


/* Advance one byte, counting lines. */
static void
step(Scan *sc)
{
	if (sc->s[sc->i] == '\n')
		sc->line++;
	sc->i++;
}


static int skip_dquote(Scan *sc);
static int skip_subst(Scan *sc, char open, char close);


/* At a backtick: skip to the matching one. */
static int
skip_backtick(Scan *sc)
{
	int line = sc->line;
	sc->i++;
	while (sc->i < sc->n && sc->s[sc->i] != '`') {
		if (sc->s[sc->i] == '\\' && sc->i + 1 < sc->n)
			step(sc);
		step(sc);
	}
	if (sc->i >= sc->n)
		return fail(sc, "unterminated ` command substitution", line);
	sc->i++;
	return 0;
}


/* At a single quote: skip past the closing one. */
static int
skip_squote(Scan *sc)
{
	int line = sc->line;
	sc->i++;
	while (sc->i < sc->n && sc->s[sc->i] != '\'')
		step(sc);
	if (sc->i >= sc->n)
		return fail(sc, "unterminated ' quote", line);
	sc->i++;
	return 0;
}


/*
** At `$`: skip one expansion ($name, $1, ${...}, $(...), $((...))).
** Returns 1 when something was skipped, 0 for a lone literal `$`.
*/
static int
skip_dollar(Scan *sc)
{
	int c = at(sc, 1);
	if (c == '(' || c == '{') {
		sc->i++;
		return skip_subst(sc, (char)c, c == '(' ? ')' : '}') < 0 ? -1 : 1;
	}
	if (is_name_start(c)) {
		sc->i++;
		while (sc->i < sc->n && is_name((unsigned char)sc->s[sc->i]))
			sc->i++;
		return 1;
	}
	if (c != -1 && strchr("0123456789@*#?$!-", c) != NULL) {
		sc->i += 2;
		return 1;
	}
	return 0;
}


/* At `open`: skip to the matching `close`, minding quotes and nesting. */
static int
skip_subst(Scan *sc, char open, char close)
{
	int line = sc->line, depth = 0;
	while (sc->i < sc->n) {
		int c = (unsigned char)sc->s[sc->i];
		if (c == '\\' && sc->i + 1 < sc->n) {
			step(sc);
			step(sc);
		} else if (c == '\'' && open == '(') {
			if (skip_squote(sc) < 0)
				return -1;
		} else if (c == '"') {
			if (skip_dquote(sc) < 0)
				return -1;
		} else if (c == '`') {
			if (skip_backtick(sc) < 0)
				return -1;
		} else if (c == '$' && (at(sc, 1) == '(' || at(sc, 1) == '{')) {
			if (skip_dollar(sc) < 0)
				return -1;
		} else if (c == open) {
			depth++;
			sc->i++;
		} else if (c == close) {
			sc->i++;
			if (--depth == 0)
				return 0;
		} else {
			step(sc);
		}
	}
	return fail(sc, open == '(' ? "unterminated $( command substitution"
		: "unterminated ${ expansion", line);
}


/* At a double quote, inside an expansion: skip past the closing one. */
static int
skip_dquote(Scan *sc)
{
	int line = sc->line;
	sc->i++;
	while (sc->i < sc->n && sc->s[sc->i] != '"') {
		int c = (unsigned char)sc->s[sc->i];
		if (c == '\\' && sc->i + 1 < sc->n) {
			step(sc);
			step(sc);
		} else if (c == '`') {
			if (skip_backtick(sc) < 0)
				return -1;
		} else if (c == '$') {
			int r = skip_dollar(sc);
			if (r < 0)
				return -1;
			if (r == 0)
				sc->i++;
		} else {
			step(sc);
		}
	}
	if (sc->i >= sc->n)
		return fail(sc, "unterminated \" quote", line);
	sc->i++;
	return 0;
}


/* An expansion at sc->i (`$...` or a backtick), copied raw. */
static int
read_expansion(Scan *sc)
{
	size_t from = sc->i;
	int r;
	if (sc->s[sc->i] == '`')
		r = skip_backtick(sc) < 0 ? -1 : 1;
	else
		r = skip_dollar(sc);
	if (r < 0)
		return -1;
	if (r == 0) {
		emit(sc, '$', sc->i);
		sc->i++;
		return 0;
	}
	sc->dynamic = 1;
	emit_raw(sc, from);
	return 0;
}


static int
read_dquote(Scan *sc)
{
	int line = sc->line;
	sc->i++;
	while (sc->i < sc->n && sc->s[sc->i] != '"') {
		int c = (unsigned char)sc->s[sc->i];
		if (c == '\\' && sc->i + 1 < sc->n) {
			int d = (unsigned char)sc->s[sc->i + 1];
			if (d == '\n') {
				sc->i++;
				step(sc);
			} else if (d == '$' || d == '`' || d == '"' || d == '\\') {
				emit(sc, (char)d, sc->i + 1);
				sc->i += 2;
			} else {
				emit(sc, '\\', sc->i);
				sc->i++;
			}
		} else if (c == '$' || c == '`') {
			if (read_expansion(sc) < 0)
				return -1;
		} else {
			emit(sc, (char)c, sc->i);
			step(sc);
		}
	}
	if (sc->i >= sc->n)
		return fail(sc, "unterminated \" quote", line);
	sc->i++;
	return 0;
}


/* $'...': decode the common escapes; the word is flagged dynamic anyway. */
static int
read_ansi(Scan *sc)
{
	int line = sc->line;
	sc->i += 2;
	sc->dynamic = 1;
	while (sc->i < sc->n && sc->s[sc->i] != '\'') {
		int c = (unsigned char)sc->s[sc->i];
		if (c == '\\' && sc->i + 1 < sc->n) {
			int d = (unsigned char)sc->s[sc->i + 1];
			const char *from = "ntr\\'\"e", *to = "\n\t\r\\'\"\033";
			const char *p = strchr(from, d);
			emit(sc, p != NULL && d != 0 ? to[p - from] : (char)d, sc->i + 1);
			sc->i++;
			step(sc);
		} else {
			emit(sc, (char)c, sc->i);
			step(sc);
		}
	}
	if (sc->i >= sc->n)
		return fail(sc, "unterminated $' quote", line);
	sc->i++;
	return 0;
}


/*
** Read one word at sc->i (not at a blank or metacharacter) into out/src.
** Stops at an unquoted blank, newline, metacharacter or the end.
*/
static int
read_word(Scan *sc)
{
	size_t start = sc->i;
	while (sc->i < sc->n) {
		int c = (unsigned char)sc->s[sc->i];
		if (is_meta(c))
			break;
		if (c == '\'') {
			sc->quoted = 1;
			if (!sc->quote)
				sc->quote = '\'';
			size_t from = sc->i + 1;
			if (skip_squote(sc) < 0)
				return -1;
			for (size_t k = from; k < sc->i - 1; k++)
				emit(sc, sc->s[k], k);
		} else if (c == '"' || (c == '$' && at(sc, 1) == '"')) {
			sc->quoted = 1;
			if (!sc->quote)
				sc->quote = '"';
			if (c == '$')
				sc->i++;
			if (read_dquote(sc) < 0)
				return -1;
		} else if (c == '$' && at(sc, 1) == '\'') {
			sc->quoted = 1;
			if (!sc->quote)
				sc->quote = '\'';
			if (read_ansi(sc) < 0)
				return -1;
		} else if (c == '$' || c == '`') {
			if (read_expansion(sc) < 0)
				return -1;
		} else if (c == '\\') {
			if (at(sc, 1) == '\n') {
				sc->i++;
				step(sc);
			} else if (at(sc, 1) == -1) {
				emit(sc, '\\', sc->i);
				sc->i++;
			} else {
				sc->quoted = 1;
				emit(sc, sc->s[sc->i + 1], sc->i + 1);
				sc->i += 2;
			}
		} else {
			if (c == '*' || c == '?' || c == '[' || (c == '~' && sc->i == start))
				sc->dynamic = 1;
			if (c == '{' && memchr(sc->s + sc->i, ',', sc->n - sc->i) != NULL)
				sc->dynamic = 1;  /* maybe a brace expansion */
			emit(sc, (char)c, sc->i);
			sc->i++;
		}
	}
	return 0;
}


static void
word_reset(Scan *sc)
{
	sc->outn = 0;
	sc->quoted = 0;
	sc->dynamic = 0;
	sc->quote = 0;
}


/* Skip blanks and line continuations (not newlines). */
static void
skip_blanks(Scan *sc)
{
	for (;;) {
		if (sc->i < sc->n && is_blank((unsigned char)sc->s[sc->i]))
			sc->i++;
		else if (at(sc, 0) == '\\' && at(sc, 1) == '\n') {
			sc->i++;
			step(sc);
		} else
			break;
	}
}


static void
skip_comment(Scan *sc)
{
	while (sc->i < sc->n && sc->s[sc->i] != '\n')
		sc->i++;
}


/* At a newline with a pending here-document: skip its body. */
static void
skip_heredoc(Scan *sc)
{
	step(sc);
	while (sc->i < sc->n) {
		size_t b = sc->i, e;
		while (sc->heredoc_strip && b < sc->n && sc->s[b] == '\t')
			b++;
		e = b;
		while (e < sc->n && sc->s[e] != '\n')
			e++;
		int done = e - b == sc->heredoc_len
			&& memcmp(sc->s + b, sc->delim, sc->heredoc_len) == 0;
		sc->i = e;
		if (sc->i < sc->n)
			step(sc);
		if (done)
			break;
	}
	sc->heredoc = 0;
}


/* Set t[k] = v (integer). */
static void
set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}


static void
set_bool(lua_State *L, const char *k, int v)
{
	lua_pushboolean(L, v);
	lua_setfield(L, -2, k);
}


/* Line number of offset `off` (0-based), counting from a known (offset, line). */
static int
line_of(const Scan *sc, size_t off, size_t known, int known_line)
{
	int line = known_line;
	size_t k;
	for (k = known; k < off; k++)
		if (sc->s[k] == '\n')
			line++;
	return line;
}


/* Push an item table for out[a..b) of the current word. */
static void
push_item(lua_State *L, const Scan *sc, size_t a, size_t b, size_t known, int known_line)
{
	lua_createtable(L, 0, 6);
	lua_pushlstring(L, sc->out + a, b - a);
	lua_setfield(L, -2, "value");
	set_int(L, "first", (lua_Integer)sc->src[a] + 1);
	set_int(L, "last", (lua_Integer)sc->src[b - 1] + 1);
	set_int(L, "line", line_of(sc, sc->src[a], known, known_line));
}


/*
** At `(` after NAME= : read the array's words into items (table on top).
** Returns 0 with sc->i past `)`.
*/
static int
read_array(lua_State *L, Scan *sc)
{
	int line = sc->line, k = 0, dyn = 0;
	sc->i++;
	lua_newtable(L);
	for (;;) {
		skip_blanks(sc);
		if (sc->i >= sc->n)
			return fail(sc, "unterminated array (missing ')')", line);
		int c = (unsigned char)sc->s[sc->i];
		if (c == '\n') {
			step(sc);
		} else if (c == '#') {
			skip_comment(sc);
		} else if (c == ')') {
			sc->i++;
			break;
		} else if (c == '(') {
			return fail(sc, "unterminated array (missing ')')", line);
		} else if (is_meta(c)) {
			return fail(sc, c == ';' ? "unexpected ';' in array" : c == '&' ? "unexpected '&' in array"
				: c == '|' ? "unexpected '|' in array" : "unexpected redirection in array", sc->line);
		} else {
			size_t first = sc->i;
			int wline = sc->line;
			word_reset(sc);
			if (read_word(sc) < 0)
				return -1;
			lua_createtable(L, 0, 6);
			lua_pushlstring(L, sc->out, sc->outn);
			lua_setfield(L, -2, "value");
			set_int(L, "first", (lua_Integer)first + 1);
			set_int(L, "last", (lua_Integer)sc->i);
			set_int(L, "line", wline);
			set_bool(L, "quoted", sc->quoted);
			set_bool(L, "dynamic", sc->dynamic);
			dyn |= sc->dynamic;
			lua_rawseti(L, -2, ++k);
		}
	}
	return dyn;
}


/*
** At NAME[+]= : read the assignment and push its table.
** `nlen` = name length, `op` = 1 for `=`, 2 for `+=`.
*/
static int
read_assignment(lua_State *L, Scan *sc, size_t nlen, int op)
{
	size_t first = sc->i;
	int line = sc->line;
	lua_createtable(L, 0, 12);
	lua_pushlstring(L, sc->s + first, nlen);
	lua_setfield(L, -2, "name");
	set_bool(L, "append", op == 2);
	set_int(L, "line", line);
	set_int(L, "first", (lua_Integer)first + 1);
	sc->i += nlen + (size_t)op;
	if (at(sc, 0) == '(') {
		set_int(L, "open", (lua_Integer)sc->i + 1);
		int dyn = read_array(L, sc);
		if (dyn < 0)
			return -1;
		lua_setfield(L, -2, "items");
		set_int(L, "close", (lua_Integer)sc->i);
		set_bool(L, "array", 1);
		set_bool(L, "dynamic", dyn);
	} else {
		size_t vstart = sc->i;
		int vline = sc->line;
		word_reset(sc);
		if (sc->i < sc->n && !is_meta((unsigned char)sc->s[sc->i])) {
			if (read_word(sc) < 0)
				return -1;
		}
		set_bool(L, "array", 0);
		lua_pushlstring(L, sc->out, sc->outn);
		lua_setfield(L, -2, "value");
		char q[2] = { sc->quote, 0 };
		lua_pushstring(L, q);
		lua_setfield(L, -2, "quote");
		set_bool(L, "dynamic", sc->dynamic);
		/* the words of the expanded value, split like IFS does */
		lua_newtable(L);
		size_t a = 0;
		int k = 0;
		while (a < sc->outn) {
			while (a < sc->outn && (is_blank((unsigned char)sc->out[a]) || sc->out[a] == '\n'))
				a++;
			size_t b = a;
			while (b < sc->outn && !is_blank((unsigned char)sc->out[b]) && sc->out[b] != '\n')
				b++;
			if (b > a) {
				push_item(L, sc, a, b, vstart, vline);
				set_bool(L, "quoted", sc->quoted);
				set_bool(L, "dynamic", sc->dynamic);
				lua_rawseti(L, -2, ++k);
			}
			a = b;
		}
		lua_setfield(L, -2, "items");
	}
	set_int(L, "last", (lua_Integer)sc->i);
	return 0;
}


/* Length of NAME at sc->i when it starts an assignment; *op = 1 (=) or 2 (+=). */
static size_t
assignment_at(const Scan *sc, int *op)
{
	size_t k = sc->i;
	if (k >= sc->n || !is_name_start((unsigned char)sc->s[k]))
		return 0;
	while (k < sc->n && is_name((unsigned char)sc->s[k]))
		k++;
	if (k < sc->n && sc->s[k] == '=') {
		*op = 1;
		return k - sc->i;
	}
	if (k + 1 < sc->n && sc->s[k] == '+' && sc->s[k + 1] == '=') {
		*op = 2;
		return k - sc->i;
	}
	return 0;
}


/* Does the word at out[0..outn) (unquoted) equal kw? */
static int
word_is(const Scan *sc, const char *kw)
{
	size_t len = strlen(kw);
	return !sc->quoted && sc->outn == len && memcmp(sc->out, kw, len) == 0;
}


/*
** Walk the whole text. Result table at `res`, pending assignments of the
** current simple command at `pend`, skipped lines at `skipped`.
*/
static int
scan(lua_State *L, Scan *sc, int res, int pend, int skipped)
{
	int depth = 0;        /* open compound commands: if/for/while/case/{/( */
	int cases = 0;        /* open case statements: `)` ends a pattern there */
	int cmdpos = 1;       /* next word is in command position */
	int cond = 0;         /* this statement follows && || | */
	int incmd = 0;        /* a command word has been seen in this statement */
	int fparen = 0;       /* inside the () of NAME() */
	int npend = 0, nres = 0, nskip = 0;

#define FLUSH(keep) do { \
		for (int f_ = 1; f_ <= npend; f_++) { \
			lua_rawgeti(L, pend, f_); \
			if (keep) { \
				lua_rawseti(L, res, ++nres); \
			} else { \
				lua_getfield(L, -1, "line"); \
				lua_rawseti(L, skipped, ++nskip); \
				lua_pop(L, 1); \
			} \
			lua_pushnil(L); \
			lua_rawseti(L, pend, f_); \
		} \
		npend = 0; \
	} while (0)

	while (sc->i < sc->n) {
		skip_blanks(sc);
		if (sc->i >= sc->n)
			break;
		int c = (unsigned char)sc->s[sc->i];
		if (c == '#') {
			skip_comment(sc);
			continue;
		}
		if (c == '\n' || c == ';' || c == '&' || c == '|') {
			int two = c != '\n' && at(sc, 1) == c;
			int ends = c == '\n' || c == ';' || (c == '&' && !two);
			FLUSH(depth == 0 && !cond && !incmd && !(c == '|' && !two));
			if (c == '\n' && sc->heredoc)
				skip_heredoc(sc);
			else if (c == '\n')
				step(sc);
			else
				sc->i += two ? 2 : 1;
			cond = !ends;
			incmd = 0;
			cmdpos = 1;
			continue;
		}
		if (c == '(') {
			if (cases > 0) {
				sc->i++;
			} else if (cmdpos && !incmd && at(sc, 1) == '(') {
				/* (( arithmetic )) */
				if (skip_subst(sc, '(', ')') < 0)
					return -1;
				incmd = 1;
				cmdpos = 0;
			} else if (cmdpos && !incmd) {
				depth++;  /* subshell */
				sc->i++;
			} else {
				fparen = 1;  /* NAME() of a function definition */
				sc->i++;
			}
			continue;
		}
		if (c == ')') {
			if (fparen)
				fparen = 0;
			else if (cases == 0 && depth > 0)
				depth--;
			sc->i++;
			cmdpos = 1;
			incmd = 0;
			continue;
		}
		if (c == '<' || c == '>') {
			int here = c == '<' && at(sc, 1) == '<' && at(sc, 2) != '<';
			while (sc->i < sc->n && (sc->s[sc->i] == '<' || sc->s[sc->i] == '>'
					|| sc->s[sc->i] == '&'))
				sc->i++;
			int strip = 0;
			if (here && at(sc, 0) == '-') {
				strip = 1;
				sc->i++;
			}
			skip_blanks(sc);
			if (sc->i < sc->n && !is_meta((unsigned char)sc->s[sc->i])) {
				word_reset(sc);
				if (read_word(sc) < 0)
					return -1;
				if (here && sc->outn < sizeof sc->delim) {
					memcpy(sc->delim, sc->out, sc->outn);
					sc->heredoc_len = sc->outn;
					sc->heredoc = 1;
					sc->heredoc_strip = strip;
				}
			}
			incmd = 1;
			continue;
		}
		int op = 0;
		size_t nlen = cmdpos && !incmd ? assignment_at(sc, &op) : 0;
		if (nlen > 0) {
			if (read_assignment(L, sc, nlen, op) < 0)
				return -1;
			lua_rawseti(L, pend, ++npend);
			continue;
		}
		/* a command word */
		word_reset(sc);
		int wline = sc->line;
		if (read_word(sc) < 0)
			return -1;
		if (cmdpos && !incmd) {
			if (word_is(sc, "if") || word_is(sc, "for") || word_is(sc, "while")
					|| word_is(sc, "until") || word_is(sc, "select")
					|| word_is(sc, "{")) {
				depth++;
				continue;
			}
			if (word_is(sc, "case")) {
				depth++;
				cases++;
				incmd = 1;
				cmdpos = 0;
				continue;
			}
			if (word_is(sc, "fi") || word_is(sc, "done") || word_is(sc, "}")) {
				if (depth > 0)
					depth--;
				continue;
			}
			if (word_is(sc, "esac")) {
				if (depth > 0)
					depth--;
				if (cases > 0)
					cases--;
				continue;
			}
			if (word_is(sc, "then") || word_is(sc, "do") || word_is(sc, "else")
					|| word_is(sc, "elif") || word_is(sc, "!")
					|| word_is(sc, "function"))
				continue;
		}
		if (cases > 0 && word_is(sc, "esac")) {
			if (depth > 0)
				depth--;
			cases--;
			continue;
		}
		if (npend > 0)
			FLUSH(0);  /* NAME=v cmd: environment of a command */
		if (!incmd) {
			lua_pushinteger(L, wline);
			lua_rawseti(L, skipped, ++nskip);
		}
		incmd = 1;
		cmdpos = 0;
	}
	FLUSH(depth == 0 && !cond && !incmd);
#undef FLUSH
	return 0;
}


/***
** Scan a bash-style config for its top-level assignments.
** @tparam string text
** @treturn[1] table array of assignments (see docs/INTERNALS.md), with
**   `skipped` = lines of statements that are not top-level assignments
** @return[2] nil
** @treturn[2] string what is wrong
** @treturn[2] int line where the unterminated construct starts
*/
static int
shell_scan(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	Scan sc;
	memset(&sc, 0, sizeof sc);
	sc.s = s;
	sc.n = n;
	sc.line = 1;
	/* scratch space owned by Lua, so an error while building tables leaks nothing */
	sc.out = lua_newuserdatauv(L, n + 1, 0);
	sc.src = lua_newuserdatauv(L, (n + 1) * sizeof(size_t), 0);
	lua_newtable(L);            /* result */
	int res = lua_gettop(L);
	lua_newtable(L);            /* pending assignments */
	int pend = lua_gettop(L);
	lua_newtable(L);            /* skipped lines */
	int skipped = lua_gettop(L);
	if (scan(L, &sc, res, pend, skipped) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, sc.err != NULL ? sc.err : "syntax error");
		lua_pushinteger(L, sc.errline);
		return 3;
	}
	lua_settop(L, skipped);
	lua_setfield(L, res, "skipped");
	lua_settop(L, res);
	return 1;
}


static const luaL_Reg funcs[] = {
	{"shell_scan",	shell_scan},
	{NULL,	NULL}
};


void
shell_open(lua_State *L)
{
	luaL_setfuncs(L, funcs, 0);
}
