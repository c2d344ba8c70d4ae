/*
** shell.c: core.scan.shell(text), a scanner for bash-style configuration files
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
** `&&`/`||`, in a pipeline or background job, or used as a command's
** environment are not top-level and are left out of the result: they are
** listed in `result.nested` with the reason (their lines also in
** `result.skipped`), and every simple command in `result.commands`, so the
** caller can refuse a variable it cannot edit safely.
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


/* At the closing quote, or at the end of the text: unterminated (`what` says which). */
static int
close_quote(Scan *sc, const char *what, int line)
{
	if (sc->i >= sc->n)
		return fail(sc, what, line);
	sc->i++;
	return 0;
}


/* Copy the byte at sc->i as it is, then step past it. */
static void
emit_step(Scan *sc, int c)
{
	emit(sc, (char)c, sc->i);
	step(sc);
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
	return close_quote(sc, "unterminated ` command substitution", line);
}


/* At a single quote: skip past the closing one. */
static int
skip_squote(Scan *sc)
{
	int line = sc->line;
	sc->i++;
	while (sc->i < sc->n && sc->s[sc->i] != '\'')
		step(sc);
	return close_quote(sc, "unterminated ' quote", line);
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
	return close_quote(sc, "unterminated \" quote", line);
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
			emit_step(sc, c);
		}
	}
	return close_quote(sc, "unterminated \" quote", line);
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
			emit_step(sc, c);
		}
	}
	return close_quote(sc, "unterminated $' quote", line);
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
** Where a statement sits: the open compound commands and how the current
** statement is joined to the one before. It decides whether an assignment
** is a plain top-level statement (kept in the result) or not (listed in
** `nested` with the reason, so a caller can refuse to edit around it).
*/
#define MAXNEST 64

typedef struct Where {
	int res, pend, skipped, nested, cmds;  /* stack slots of the result tables */
	int nres, npend, nskip, nnest, ncmd;
	int depth;            /* open compound commands: if/for/while/case/{/( */
	char kind[MAXNEST];   /* their kinds, outermost first (see kind_why) */
	int cases;            /* open case statements: `)` ends a pattern there */
	int chead;            /* after `case`, before `in` */
	int cpat;             /* reading a case pattern (words are not commands) */
	int cmdpos;           /* next word is in command position */
	int cond;             /* this statement follows && || | */
	const char *condwhy;  /* which of them */
	int incmd;            /* a command word (or redirection) has been seen */
	const char *cmdwhy;   /* why an assignment before it is not plain */
	int fparen;           /* inside the () of NAME() */
	int fdef;             /* a function name was read: its body comes next */
	int fnkw;             /* after `function`: the next word is the name */
	int cmd;              /* slot in `cmds` of the current simple command, 0 none */
	int nargs;            /* its argument count */
} Where;


static const char *
kind_why(char k)
{
	switch (k) {
	case 'F': return "in a function";
	case 'i': return "inside an if block";
	case 'c': return "inside a case block";
	case 'w': return "inside a while loop";
	case 'u': return "inside an until loop";
	case 'f': return "inside a for loop";
	case 's': return "inside a select loop";
	case '{': return "inside a { } group";
	case '(': return "inside a ( ) subshell";
	default: return "inside a compound command";
	}
}


/* The reason for the innermost open construct, a function body first. */
static const char *
depth_why(const Where *w)
{
	int n = w->depth < MAXNEST ? w->depth : MAXNEST;
	for (int k = 0; k < n; k++)
		if (w->kind[k] == 'F')
			return kind_why('F');
	return kind_why(n > 0 ? w->kind[n - 1] : 0);
}


/* The kind of the innermost open compound command, 0 when unknown. */
static char
innermost(const Where *w)
{
	return w->depth > 0 && w->depth <= MAXNEST ? w->kind[w->depth - 1] : 0;
}


static void
push_kind(Where *w, char k)
{
	if (w->fdef)
		k = 'F';
	w->fdef = 0;
	if (w->depth < MAXNEST)
		w->kind[w->depth] = k;
	w->depth++;
}


static void
pop_kind(Where *w)
{
	if (w->depth > 0)
		w->depth--;
}


/*
** Move the pending assignments of the statement just ended to the result
** (keep) or to `nested` with `why` (their lines also go to `skipped`).
*/
static void
flush(lua_State *L, Where *w, int keep, const char *why)
{
	for (int f = 1; f <= w->npend; f++) {
		lua_rawgeti(L, w->pend, f);
		if (keep) {
			lua_rawseti(L, w->res, ++w->nres);
		} else {
			lua_pushstring(L, why);
			lua_setfield(L, -2, "why");
			lua_getfield(L, -1, "line");
			lua_rawseti(L, w->skipped, ++w->nskip);
			lua_rawseti(L, w->nested, ++w->nnest);
		}
		lua_pushnil(L);
		lua_rawseti(L, w->pend, f);
	}
	w->npend = 0;
}


/* At \n ; & | && || : end (or join) the statement. */
static void
separator(lua_State *L, Scan *sc, Where *w, int c)
{
	int two = c != '\n' && at(sc, 1) == c;
	if (w->cpat && c == '|') {  /* a|b) */
		sc->i++;
		return;
	}
	int ends = c == '\n' || c == ';' || (c == '&' && !two);
	const char *why = w->depth > 0 ? depth_why(w) : w->cond ? w->condwhy
		: c == '|' && !two ? "in a pipeline" : c == '&' && !two ? "in a background job"
		: w->incmd ? w->cmdwhy : NULL;
	flush(L, w, why == NULL, why);
	if (c == '\n' && sc->heredoc)
		skip_heredoc(sc);
	else if (c == '\n')
		step(sc);
	else
		sc->i += two ? 2 : 1;
	if (!ends) {
		w->cond = 1;
		w->condwhy = c == '|' && !two ? "in a pipeline" : c == '|' ? "after ||" : "after &&";
	} else {
		w->cond = 0;
	}
	w->incmd = 0;
	w->cmdpos = 1;
	w->cmd = 0;
	if (c == ';' && two && innermost(w) == 'c')
		w->cpat = 1;  /* ;; : the next arm's pattern follows */
}


/* At `(` or `)` outside any word. */
static int
paren(lua_State *L, Scan *sc, Where *w, int c)
{
	if (c == ')') {
		if (w->npend > 0)  /* ( X=1 ): the subshell ends the statement */
			flush(L, w, 0, w->depth > 0 ? depth_why(w) : kind_why('('));
		if (w->cpat) {
			w->cpat = 0;  /* end of a case pattern */
		} else if (w->fparen) {
			w->fparen = 0;
			w->fdef = 1;
		} else if (w->cases == 0) {
			pop_kind(w);
		}
		sc->i++;
		w->cmdpos = 1;
		w->incmd = 0;
		w->cmd = 0;
		return 0;
	}
	if (w->cases > 0) {
		sc->i++;  /* a case pattern's optional ( */
	} else if (w->fdef && at(sc, 1) == ')') {
		w->fparen = 1;  /* function NAME () */
		sc->i++;
	} else if (w->cmdpos && !w->incmd && at(sc, 1) == '(') {
		if (skip_subst(sc, '(', ')') < 0)  /* (( arithmetic )) */
			return -1;
		w->incmd = 1;
		w->cmdwhy = "as a command's environment";
		w->cmdpos = 0;
	} else if (w->cmdpos && !w->incmd) {
		push_kind(w, '(');  /* subshell (or a function body) */
		sc->i++;
	} else {
		w->fparen = 1;  /* NAME() of a function definition */
		sc->i++;
	}
	return 0;
}


/* At < or >: skip the redirection and its word, noting a here-document. */
static int
redirection(Scan *sc, Where *w, int c)
{
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
	if (!w->incmd)
		w->cmdwhy = "with a redirection";
	w->incmd = 1;
	return 0;
}


/*
** A reserved word in command position: track the compound commands.
** Returns 1 when the word was one.
*/
static int
keyword(Scan *sc, Where *w)
{
	static const char *const open[] = { "if", "for", "while", "until", "select", "{" };
	static const char kinds[] = { 'i', 'f', 'w', 'u', 's', '{' };
	for (size_t k = 0; k < sizeof kinds; k++)
		if (word_is(sc, open[k])) {
			push_kind(w, kinds[k]);
			return 1;
		}
	if (word_is(sc, "case")) {
		push_kind(w, 'c');
		w->cases++;
		w->chead = 1;
		w->incmd = 1;
		w->cmdpos = 0;
		return 1;
	}
	if (word_is(sc, "fi") || word_is(sc, "done") || word_is(sc, "}")) {
		pop_kind(w);
		return 1;
	}
	if (word_is(sc, "esac")) {
		pop_kind(w);
		if (w->cases > 0)
			w->cases--;
		return 1;
	}
	if (word_is(sc, "function")) {
		w->fnkw = 1;
		return 1;
	}
	return word_is(sc, "then") || word_is(sc, "do") || word_is(sc, "else")
		|| word_is(sc, "elif") || word_is(sc, "!");
}


/* Does the word just read look like NAME= or NAME+= (an array may follow)? */
static int
word_assigns(const Scan *sc)
{
	size_t k = 0;
	if (sc->outn < 2 || !is_name_start((unsigned char)sc->out[0]))
		return 0;
	while (k < sc->outn && is_name((unsigned char)sc->out[k]))
		k++;
	return (k == sc->outn - 1 && sc->out[k] == '=')
		|| (k == sc->outn - 2 && sc->out[k] == '+' && sc->out[k + 1] == '=');
}


/*
** A word of a simple command: its name starts an entry of `commands`
** ({name=, line=, args={...}}), later words are its args. `declare X=(a b)`:
** the array is read (and dropped) so its words are not taken for commands.
*/
static int
command_word(lua_State *L, Scan *sc, Where *w, int wline)
{
	if (w->npend > 0)
		flush(L, w, 0, "as a command's environment");  /* NAME=v cmd */
	if (!w->incmd) {
		lua_pushinteger(L, wline);
		lua_rawseti(L, w->skipped, ++w->nskip);
		lua_createtable(L, 0, 3);
		lua_pushlstring(L, sc->out, sc->outn);
		lua_setfield(L, -2, "name");
		set_int(L, "line", wline);
		lua_newtable(L);
		lua_setfield(L, -2, "args");
		lua_rawseti(L, w->cmds, ++w->ncmd);
		w->cmd = w->ncmd;
		w->nargs = 0;
		w->fdef = 0;
		w->cmdwhy = "as a command's environment";
	} else if (w->cmd > 0) {
		lua_rawgeti(L, w->cmds, w->cmd);
		lua_getfield(L, -1, "args");
		lua_pushlstring(L, sc->out, sc->outn);
		lua_rawseti(L, -2, ++w->nargs);
		lua_pop(L, 2);
	}
	if (w->incmd && word_assigns(sc) && at(sc, 0) == '(') {
		if (read_array(L, sc) < 0)
			return -1;
		lua_pop(L, 1);
	}
	w->incmd = 1;
	w->cmdpos = 0;
	return 0;
}


/* One word (or NAME=value) at sc->i. */
static int
word(lua_State *L, Scan *sc, Where *w)
{
	int op = 0;
	size_t nlen = w->cmdpos && !w->incmd ? assignment_at(sc, &op) : 0;
	if (nlen > 0) {
		if (read_assignment(L, sc, nlen, op) < 0)
			return -1;
		lua_rawseti(L, w->pend, ++w->npend);
		return 0;
	}
	word_reset(sc);
	int wline = sc->line;
	if (read_word(sc) < 0)
		return -1;
	if (w->chead) {  /* case WORD in */
		if (word_is(sc, "in")) {
			w->chead = 0;
			w->cpat = 1;
		}
		return 0;
	}
	if (w->cpat) {  /* a pattern, or the esac after the last arm */
		if (word_is(sc, "esac")) {
			w->cpat = 0;
			pop_kind(w);
			if (w->cases > 0)
				w->cases--;
		}
		return 0;
	}
	if (w->cmdpos && !w->incmd) {
		if (w->fnkw) {  /* the name after `function` */
			w->fnkw = 0;
			w->fdef = 1;
			return 0;
		}
		if (keyword(sc, w))
			return 0;
	}
	if (w->cases > 0 && word_is(sc, "esac")) {
		pop_kind(w);
		w->cases--;
		return 0;
	}
	return command_word(L, sc, w, wline);
}


/* Walk the whole text, filling the tables named in w. */
static int
scan(lua_State *L, Scan *sc, Where *w)
{
	w->cmdpos = 1;
	while (sc->i < sc->n) {
		skip_blanks(sc);
		if (sc->i >= sc->n)
			break;
		int c = (unsigned char)sc->s[sc->i];
		int r = 0;
		if (c == '#')
			skip_comment(sc);
		else if (c == '\n' || c == ';' || c == '&' || c == '|')
			separator(L, sc, w, c);
		else if (c == '(' || c == ')')
			r = paren(L, sc, w, c);
		else if (c == '<' || c == '>')
			r = redirection(sc, w, c);
		else
			r = word(L, sc, w);
		if (r < 0)
			return -1;
	}
	const char *why = w->depth > 0 ? depth_why(w) : w->cond ? w->condwhy
		: w->incmd ? w->cmdwhy : NULL;
	flush(L, w, why == NULL, why);
	return 0;
}


/***
** Scan a bash-style config for its top-level assignments.
** @tparam string text
** @treturn[1] table array of assignments (see docs/INTERNALS.md), with
**   `skipped` = lines of statements that are not top-level assignments,
**   `nested` = the assignments that are not plain top-level statements, each
**   with `why` ("inside an if block", "after &&", ...), and `commands` =
**   every simple command `{name=, line=, args={words}}` at any depth
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
	Where w;
	memset(&sc, 0, sizeof sc);
	memset(&w, 0, sizeof w);
	sc.s = s;
	sc.n = n;
	sc.line = 1;
	/* scratch space owned by Lua, so an error while building tables leaks nothing */
	sc.out = lua_newuserdatauv(L, n + 1, 0);
	sc.src = lua_newuserdatauv(L, (n + 1) * sizeof(size_t), 0);
	lua_newtable(L);            /* result */
	w.res = lua_gettop(L);
	lua_newtable(L);            /* pending assignments */
	w.pend = lua_gettop(L);
	lua_newtable(L);            /* skipped lines */
	w.skipped = lua_gettop(L);
	lua_newtable(L);            /* nested assignments */
	w.nested = lua_gettop(L);
	lua_newtable(L);            /* commands */
	w.cmds = lua_gettop(L);
	if (scan(L, &sc, &w) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, sc.err != NULL ? sc.err : "syntax error");
		lua_pushinteger(L, sc.errline);
		return 3;
	}
	lua_pushvalue(L, w.skipped);
	lua_setfield(L, w.res, "skipped");
	lua_pushvalue(L, w.nested);
	lua_setfield(L, w.res, "nested");
	lua_pushvalue(L, w.cmds);
	lua_setfield(L, w.res, "commands");
	lua_settop(L, w.res);
	return 1;
}


void
shell_open(lua_State *L)
{
	vfi_export(L, "scan", "shell", shell_scan);
}
