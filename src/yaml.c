/*
** yaml.c: a scanner for the YAML subset /etc/booster.yaml uses, so the Lua
** side can replace one top-level value and leave every other byte alone.
**
** Understood: a top-level block mapping of `key: value` entries at column 0
** (plain, 'single' or "double" quoted keys), values that are plain or quoted
** scalars (folded over indented continuation lines), flow collections
** `[a, b]` / `{k: v}` (may span lines), block scalars `|` / `>`, and nested
** blocks (indented lines, or `- item` lines at column 0 after an empty value),
** comments, blank lines and one leading `---`.
** Refused with `nil, msg, line`: tab indentation, unterminated quotes or flow
** collections, a line that is not `key: value` at top level, duplicate keys
** (go-yaml, which booster uses, refuses them too), anchors/aliases/tags,
** several documents, bytes YAML does not allow (control characters, bad UTF-8).
*/
#include <stdio.h>
#include <string.h>

#include "core.h"

enum style { ST_EMPTY, ST_PLAIN, ST_SINGLE, ST_DOUBLE, ST_FLOW, ST_BLOCK };

static const char *const style_names[] = {
	"empty", "plain", "single", "double", "flow", "block"
};

enum cont {      /* what an indented line after the entry means */
	C_NONE,      /* nothing may follow: indented lines are errors */
	C_PLAIN,     /* continues a plain scalar */
	C_EMPTY,     /* empty so far: may start a nested block */
	C_BLOCK,     /* nested block (or block scalar) */
};

typedef struct {
	lua_State *L;
	const char *s;
	size_t n;
	char err[160];     /* error message */
	int errline;
} Scan;

typedef struct {
	int open;          /* an entry table is on the stack top */
	int line;
	size_t first;      /* 0-based offsets */
	size_t last;       /* one past the last byte */
	int style;
	int has_value;
	size_t vfirst, vlast;   /* value span, vlast one past */
	enum cont cont;
	int dash0;         /* nested block started with `-` at column 0 */
	int bscalar;       /* block scalar: indented `#` lines are content */
} Entry;


static int
fail(Scan *sc, const char *msg, int line)
{
	snprintf(sc->err, sizeof sc->err, "%s", msg);
	sc->errline = line;
	return 0;
}


static int
isblank_(int c)
{
	return c == ' ' || c == '\t';
}


/* End of the line starting at p, not counting "\n" or "\r\n". */
static size_t
line_end(const Scan *sc, size_t p)
{
	while (p < sc->n && sc->s[p] != '\n')
		p++;
	if (p > 0 && sc->s[p - 1] == '\r')
		p--;
	return p;
}


/* Start of the next line after p (which is inside a line). */
static size_t
next_line(const Scan *sc, size_t p)
{
	while (p < sc->n && sc->s[p] != '\n')
		p++;
	return p < sc->n ? p + 1 : p;
}


/* Only whitespace, or whitespace and a comment, from p to e. */
static int
rest_is_empty(const Scan *sc, size_t p, size_t e)
{
	while (p < e && isblank_(sc->s[p]))
		p++;
	return p == e || sc->s[p] == '#';
}


/*
** Reject what a YAML reader refuses before it sees any token: C0/C1 control
** characters other than tab and line breaks, DEL, U+FFFE/U+FFFF, bad UTF-8
** (PyYAML's NON_PRINTABLE, go-yaml's reader checks).
*/
static int
check_chars(Scan *sc)
{
	const unsigned char *s = (const unsigned char *)sc->s;
	size_t i = 0, n = sc->n;
	int line = 1;
	while (i < n) {
		unsigned c = s[i];
		unsigned cp;
		int len, k;
		if (c < 0x80) {
			if (c == '\n')
				line++;
			else if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
				return fail(sc, "control character not allowed in YAML", line);
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2; cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3; cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4; cp = c & 0x07;
		} else {
			return fail(sc, "invalid UTF-8", line);
		}
		if (i + len > n)
			return fail(sc, "invalid UTF-8", line);
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return fail(sc, "invalid UTF-8", line);
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
		    || (cp >= 0xd800 && cp <= 0xdfff))
			return fail(sc, "invalid UTF-8", line);
		if ((cp >= 0x80 && cp <= 0x9f && cp != 0x85) || cp == 0xfffe || cp == 0xffff)
			return fail(sc, "control character not allowed in YAML", line);
		i += len;
	}
	return 1;
}


static void
add_utf8(luaL_Buffer *b, unsigned long cp)
{
	char u[4];
	int n;
	if (cp < 0x80) {
		u[0] = (char)cp; n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f)); n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
	}
	luaL_addlstring(b, u, n);
}


static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}


/*
** Line folding inside quoted scalars (YAML 1.2 7.3): at a line break, drop
** trailing white space, then one break becomes a space and n+1 breaks become
** n newlines; leading white space of the next line is dropped.
** *pp is at the '\n' (or "\r\n"); returns with *pp at the next content byte.
*/
static void
fold_break(Scan *sc, luaL_Buffer *b, size_t keep, size_t *pp, int *line)
{
	size_t p = *pp;
	int breaks = 0;
	luaL_buffsub(b, luaL_bufflen(b) - keep);
	for (;;) {
		if (p < sc->n && sc->s[p] == '\r')
			p++;
		if (p < sc->n && sc->s[p] == '\n') {
			p++;
			(*line)++;
			breaks++;
		}
		while (p < sc->n && isblank_(sc->s[p]))
			p++;
		if (p < sc->n && (sc->s[p] == '\n' || (sc->s[p] == '\r' && p + 1 < sc->n && sc->s[p + 1] == '\n')))
			continue;
		break;
	}
	if (breaks == 1)
		luaL_addchar(b, ' ');
	else
		while (--breaks > 0)
			luaL_addchar(b, '\n');
	*pp = p;
}


/* A document marker (`---` or `...`) at column 0 of the line at p. */
static int
doc_marker(const Scan *sc, size_t p)
{
	const char *s = sc->s + p;
	if (p + 3 > sc->n || !(memcmp(s, "---", 3) == 0 || memcmp(s, "...", 3) == 0))
		return 0;
	return p + 3 == sc->n || isblank_(s[3]) || s[3] == '\n' || s[3] == '\r';
}


/*
** The escape after a backslash at *pp in a double-quoted scalar: add what it
** stands for to b and move *pp past it. 1, or 0 on failure.
*/
static int
quoted_escape(Scan *sc, luaL_Buffer *b, size_t *pp, int *line, int start)
{
	static const char from[] = "0abt\tnvfre \"/\\", to[] = "\0\a\b\t\t\n\v\f\r\x1b \"/\\";
	size_t p = *pp;
	int e, nhex = 0;
	unsigned long cp = 0;
	const char *hit;
	if (p + 1 >= sc->n)
		return fail(sc, "unterminated double-quoted scalar", start);
	e = (unsigned char)sc->s[p + 1];
	p += 2;
	*pp = p;
	if (e != 0 && (hit = memchr(from, e, sizeof from - 1)) != NULL) {
		luaL_addchar(b, to[hit - from]);
		return 1;
	}
	switch (e) {
	case 'N': add_utf8(b, 0x85); return 1;
	case '_': add_utf8(b, 0xa0); return 1;
	case 'L': add_utf8(b, 0x2028); return 1;
	case 'P': add_utf8(b, 0x2029); return 1;
	case 'x': nhex = 2; break;
	case 'u': nhex = 4; break;
	case 'U': nhex = 8; break;
	case '\r': case '\n':
		/* escaped line break: join without a space */
		if (e == '\r' && p < sc->n && sc->s[p] == '\n')
			p++;
		(*line)++;
		while (p < sc->n && isblank_(sc->s[p]))
			p++;
		*pp = p;
		return 1;
	default:
		return fail(sc, "invalid escape in double-quoted scalar", *line);
	}
	while (nhex-- > 0) {
		int h = p < sc->n ? hexval((unsigned char)sc->s[p]) : -1;
		if (h < 0)
			return fail(sc, "invalid escape in double-quoted scalar", *line);
		cp = cp * 16 + h;
		p++;
	}
	*pp = p;
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fail(sc, "invalid escape in double-quoted scalar", *line);
	add_utf8(b, cp);
	return 1;
}


/*
** Scan a quoted scalar opening at *pp, push its value; *pp ends one past the
** closing quote. Multi-line scalars are folded.
*/
static int
quoted(Scan *sc, size_t *pp, int *line)
{
	char q = sc->s[*pp];
	size_t p = *pp + 1;
	int start = *line;
	size_t keep = 0;	/* buffer length up to the last non-blank: folding trims after it */
	luaL_Buffer b;
	luaL_buffinit(sc->L, &b);
	for (;;) {
		char c;
		if (p >= sc->n)
			return fail(sc, q == '"' ? "unterminated double-quoted scalar"
			    : "unterminated single-quoted scalar", start);
		c = sc->s[p];
		if (c == q && q == '\'' && p + 1 < sc->n && sc->s[p + 1] == '\'') {
			luaL_addchar(&b, '\'');
			p += 2;
		} else if (c == q) {
			break;
		} else if (c == '\n' || (c == '\r' && p + 1 < sc->n && sc->s[p + 1] == '\n')) {
			fold_break(sc, &b, keep, &p, line);
			if (p < sc->n && (p == 0 || sc->s[p - 1] == '\n') && doc_marker(sc, p))
				return fail(sc, "document marker inside a quoted scalar", *line);
		} else if (c == '\\' && q == '"') {
			if (!quoted_escape(sc, &b, &p, line, start))
				return 0;
		} else {
			luaL_addchar(&b, c);
			p++;
			if (isblank_(c))
				continue;
		}
		keep = luaL_bufflen(&b);
	}
	luaL_pushresult(&b);
	*pp = p + 1;
	return 1;
}


/* Where the scan of a flow collection is. */
struct flow {
	int depth, flat, nitems;
	int item;	/* current depth-1 item: 0 none, 1 plain, 2 quoted (on the stack) */
	size_t ifirst, ilast;	/* a plain item's text */
};


/* A quoted scalar inside the collection: an item of its own at depth 1, else dropped. */
static int
flow_quoted(Scan *sc, struct flow *f, size_t *p, int *line)
{
	if (!quoted(sc, p, line))
		return 0;
	if (f->depth == 1 && f->item == 0) {
		f->item = 2;
	} else {
		lua_pop(sc->L, 1);
		if (f->depth == 1)
			f->flat = 0;
	}
	return 1;
}


/* Plain text c at p of a depth-1 item. */
static void
flow_plain(Scan *sc, struct flow *f, size_t p, char c)
{
	if (f->item == 2) {
		lua_pop(sc->L, 1);
		f->flat = 0;
		f->item = 1;
	} else if (f->item == 0) {
		f->item = 1;
		f->ifirst = p;
	} else if (memchr(sc->s + f->ilast, '\n', p - f->ilast)) {
		f->flat = 0;   /* multi-line plain item: not folded here */
	}
	if (c == ':' && (p + 1 >= sc->n || isblank_(sc->s[p + 1]) || strchr(",[]{}\r\n", sc->s[p + 1])))
		f->flat = 0;   /* a `k: v` pair inside [] */
	f->ilast = p + 1;
}


/* A `,` at depth 1 or the closing bracket: the current item goes into the array (when flat). */
static int
flow_end_item(Scan *sc, struct flow *f, char c, int line)
{
	lua_State *L = sc->L;
	if (c == ',' && f->item == 0)
		return fail(sc, "empty entry in flow collection", line);
	if (f->item == 2 && !f->flat) {
		lua_pop(L, 1);
	} else if (f->item != 0 && f->flat) {
		if (f->item == 1)
			lua_pushlstring(L, sc->s + f->ifirst, f->ilast - f->ifirst);
		lua_rawseti(L, -2, ++f->nitems);
	}
	f->item = 0;
	return 1;
}


/* Blanks, line breaks and comments inside a flow collection: where the next token starts. */
static int
flow_skip(Scan *sc, size_t *pp, int *line)
{
	size_t p = *pp;
	for (;;) {
		char c = p < sc->n ? sc->s[p] : '\0';
		if (p < sc->n && c == '\n') {
			(*line)++;
			p++;
			if (doc_marker(sc, p))
				return fail(sc, "document marker inside a flow collection", *line);
		} else if (p < sc->n && (isblank_(c) || c == '\r')) {
			p++;
		} else if (p < sc->n && c == '#' && (isblank_(sc->s[p - 1]) || sc->s[p - 1] == '\n')) {
			p = line_end(sc, p);
		} else {
			*pp = p;
			return 1;
		}
	}
}


/*
** Scan a flow collection opening at *pp to its matching bracket. For a flat
** `[...]` of single-line scalars, push an array of its items, else push nil.
*/
static int
flow(Scan *sc, size_t *pp, int *line)
{
	struct flow f = {0, sc->s[*pp] == '[', 0, 0, 0, 0};
	size_t p = *pp;
	int start = *line;
	char prev = '[';    /* last significant character */
	lua_newtable(sc->L);
	for (;;) {
		char c;
		if (!flow_skip(sc, &p, line))
			return 0;
		if (p >= sc->n)
			return fail(sc, "unterminated flow collection", start);
		c = sc->s[p];
		if ((c == '"' || c == '\'') && strchr("[{,:?", prev)) {
			if (!flow_quoted(sc, &f, &p, line))
				return 0;
		} else if (c == '[' || c == '{') {
			if (f.depth >= 1)
				f.flat = 0;
			f.depth++;
			p++;
		} else if (c == ']' || c == '}' || (c == ',' && f.depth == 1)) {
			p++;
			if ((c == ',' || --f.depth == 0) && !flow_end_item(sc, &f, c, *line))
				return 0;
			if (c != ',' && f.depth == 0) {
				*pp = p;
				if (!f.flat) {
					lua_pop(sc->L, 1);
					lua_pushnil(sc->L);
				}
				return 1;
			}
		} else {
			if (f.depth == 1)
				flow_plain(sc, &f, p, c);
			p++;
		}
		prev = c;
	}
}


/* Push the folded value of a plain scalar spanning [a, e) (lines trimmed). */
static void
push_plain(Scan *sc, size_t a, size_t e)
{
	luaL_Buffer b;
	size_t p = a;
	int breaks = -1;
	luaL_buffinit(sc->L, &b);
	while (p < e) {
		size_t le = line_end(sc, p), ce, cs = p;
		if (le > e)
			le = e;
		while (cs < le && isblank_(sc->s[cs]))
			cs++;
		ce = le;
		while (ce > cs && isblank_(sc->s[ce - 1]))
			ce--;
		if (cs == ce) {
			breaks++;
		} else {
			if (breaks == 0)
				luaL_addchar(&b, ' ');
			while (breaks-- > 0)
				luaL_addchar(&b, '\n');
			luaL_addlstring(&b, sc->s + cs, ce - cs);
			breaks = 0;
		}
		p = next_line(sc, le);
	}
	luaL_pushresult(&b);
}


/*
** Check the plain-scalar text [p, e) of one line: cut it at a comment and
** refuse `: ` inside. Returns the end of the scalar text (trailing blanks
** dropped) and sets *comment when a comment followed.
*/
static int
plain_part(Scan *sc, size_t p, size_t e, int line, size_t *end, int *comment)
{
	size_t i = p, last = p;
	*comment = 0;
	for (; i < e; i++) {
		char c = sc->s[i];
		if (c == '#' && i > p && isblank_(sc->s[i - 1])) {
			*comment = 1;
			break;
		}
		if (c == ':' && (i + 1 == e || isblank_(sc->s[i + 1])))
			return fail(sc, "mapping values are not allowed here", line);
		if (!isblank_(c))
			last = i + 1;
	}
	*end = last;
	return 1;
}


static void
set_offset(lua_State *L, const char *k, size_t v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, k);
}


/* Finish the open entry (table on the stack top) and append it to res. */
static void
close_entry(Scan *sc, Entry *en, int res)
{
	lua_State *L = sc->L;
	if (!en->open)
		return;
	set_offset(L, "first", en->first + 1);
	set_offset(L, "last", en->last);
	if (en->style == ST_PLAIN && en->has_value) {
		push_plain(sc, en->vfirst, en->vlast);
		lua_setfield(L, -2, "value");
	}
	if (en->has_value) {
		set_offset(L, "value_first", en->vfirst + 1);
		set_offset(L, "value_last", en->vlast);
	}
	lua_pushstring(L, style_names[en->style]);
	lua_setfield(L, -2, "style");
	lua_rawseti(L, res, (lua_Integer)luaL_len(L, res) + 1);
	en->open = 0;
}


/* Parse the key at column 0 of the line [p, le): push it, return the colon. */
static int
parse_key(Scan *sc, size_t p, size_t le, int line, size_t *colon)
{
	const char *s = sc->s;
	char c = s[p];
	size_t i;
	if (c == '"' || c == '\'') {
		int l = line;
		i = p;
		if (!quoted(sc, &i, &l))
			return 0;
		if (l != line)
			return fail(sc, "multi-line keys are not supported", line);
		while (i < le && isblank_(s[i]))
			i++;
		if (i >= le || s[i] != ':' || (i + 1 < le && !isblank_(s[i + 1])))
			return fail(sc, "expected `key: value`", line);
		*colon = i;
		return 1;
	}
	if (c == '-' && (p + 1 >= le || isblank_(s[p + 1])))
		return fail(sc, "a top-level sequence is not supported, expected `key: value`", line);
	if ((c == '?' || c == ':') && (p + 1 >= le || isblank_(s[p + 1])))
		return fail(sc, "complex keys are not supported, expected `key: value`", line);
	if (c == '&' || c == '*' || c == '!')
		return fail(sc, "anchors, aliases and tags are not supported", line);
	if (strchr(",[]{}|>%@`", c))
		return fail(sc, "expected `key: value`", line);
	for (i = p; i < le; i++) {
		if (s[i] == '#' && isblank_(s[i - 1]))
			break;
		if (s[i] == ':' && (i + 1 == le || isblank_(s[i + 1]))) {
			size_t e = i;
			while (e > p && isblank_(s[e - 1]))
				e--;
			lua_pushlstring(sc->L, s + p, e - p);
			*colon = i;
			return 1;
		}
	}
	return fail(sc, "expected `key: value`", line);
}


/* A quoted scalar (value=) or a flow collection (items=) that must end the line. */
static int
value_closed(Scan *sc, Entry *en, size_t p, int *line, size_t *next)
{
	char c = sc->s[p];
	int isflow = c == '[' || c == '{';
	size_t q = p, le;
	if (!(isflow ? flow(sc, &q, line) : quoted(sc, &q, line)))
		return 0;
	lua_setfield(sc->L, -2, isflow ? "items" : "value");
	le = line_end(sc, q);
	if (!rest_is_empty(sc, q, le))
		return fail(sc, isflow ? "unexpected text after a flow collection"
		    : "unexpected text after a quoted scalar", *line);
	en->style = isflow ? ST_FLOW : c == '"' ? ST_DOUBLE : ST_SINGLE;
	en->vlast = q;
	en->last = le;
	en->cont = C_NONE;
	*next = next_line(sc, le);
	return 1;
}


/* A block scalar header `|` or `>` (indicators allowed); its lines are continuations. */
static int
value_block(Scan *sc, Entry *en, size_t p, size_t le, int line)
{
	size_t q = p + 1;
	while (q < le && (sc->s[q] == '+' || sc->s[q] == '-' || (sc->s[q] >= '1' && sc->s[q] <= '9')))
		q++;
	if ((q < le && !isblank_(sc->s[q])) || !rest_is_empty(sc, q, le))
		return fail(sc, "invalid block scalar header", line);
	en->style = ST_BLOCK;
	en->vlast = q;
	en->cont = C_BLOCK;
	en->bscalar = 1;
	return 1;
}


/* A plain scalar: refuse what cannot start one, then its first line. */
static int
value_plain(Scan *sc, Entry *en, size_t p, size_t le, int line)
{
	char c = sc->s[p];
	size_t e;
	int comment;
	if (c == '&' || c == '*' || c == '!')
		return fail(sc, "anchors, aliases and tags are not supported", line);
	if (c == '@' || c == '`')
		return fail(sc, "reserved character cannot start a plain scalar", line);
	if ((c == '-' || c == '?') && (p + 1 >= le || isblank_(sc->s[p + 1])))
		return fail(sc, "block sequence entries are not allowed here", line);
	if (strchr(",]}%", c))
		return fail(sc, "character cannot start a plain scalar", line);
	if (!plain_part(sc, p, le, line, &e, &comment))
		return 0;
	en->style = ST_PLAIN;
	en->vlast = e;
	en->cont = comment ? C_NONE : C_PLAIN;
	return 1;
}


/*
** Parse the value after the colon on the entry's line. The entry table is on
** the stack top. Returns the position after the value (start of next line).
*/
static int
parse_value(Scan *sc, Entry *en, size_t p, int *line, size_t *next)
{
	size_t le = line_end(sc, p);
	char c;
	while (p < le && isblank_(sc->s[p])) {
		if (sc->s[p] == '\t')   /* go-yaml and PyYAML refuse it too */
			return fail(sc, "tab character after ':' (use a space)", *line);
		p++;
	}
	en->last = le;
	*next = next_line(sc, le);
	if (p == le || sc->s[p] == '#') {
		en->style = ST_EMPTY;
		en->cont = C_EMPTY;
		return 1;
	}
	c = sc->s[p];
	en->vfirst = p;
	en->has_value = 1;
	if (c == '"' || c == '\'' || c == '[' || c == '{')
		return value_closed(sc, en, p, line, next);
	if (c == '|' || c == '>')
		return value_block(sc, en, p, le, *line);
	return value_plain(sc, en, p, le, *line);
}


/* An indented (or `-` at column 0) line [p, le) that continues the entry. */
static int
continuation(Scan *sc, Entry *en, size_t p, size_t le, int line)
{
	size_t cs = p;
	while (cs < le && isblank_(sc->s[cs]))
		cs++;
	switch (en->cont) {
	case C_PLAIN: {
		size_t e;
		int comment;
		if (!plain_part(sc, cs, le, line, &e, &comment))
			return 0;
		en->vlast = e;
		en->last = le;
		if (comment)
			en->cont = C_NONE;
		return 1;
	}
	case C_EMPTY:
		en->style = ST_BLOCK;
		en->has_value = 1;
		en->vfirst = cs;
		en->dash0 = cs == p;
		en->cont = C_BLOCK;
		/* fall through */
	case C_BLOCK:
		if (cs == p && !en->dash0)
			return fail(sc, "expected `key: value`", line);
		en->vlast = le;
		en->last = le;
		return 1;
	default:
		return fail(sc, "unexpected indented line", line);
	}
}


/* Tabs may not indent a line (a blank line inside a block scalar may hold them). */
static int
check_indent(Scan *sc, const Entry *en, size_t p, size_t cs, size_t le, int line)
{
	if (cs == le && memchr(sc->s + p, '\t', le - p) && !(en->open && en->bscalar))
		return fail(sc, "tab character used for indentation", line);
	if (cs < le && cs > p && memchr(sc->s + p, '\t', cs - p))
		return fail(sc, "tab character used for indentation", line);
	return 1;
}


/* A `---` line: one, before any entry, alone on its line. */
static int
doc_start(Scan *sc, const Entry *en, size_t p, size_t le, int line, int *docstart, int res)
{
	if (sc->s[p] == '.' || *docstart || en->open || luaL_len(sc->L, res) > 0)
		return fail(sc, sc->s[p] == '.' ? "document end marker is not supported"
		    : "several documents are not supported", line);
	if (!rest_is_empty(sc, p + 3, le))
		return fail(sc, "content after `---` is not supported", line);
	*docstart = 1;
	return 1;
}


/* A new top-level entry at p: its key (never seen before) and its table on the stack. */
static int
open_entry(Scan *sc, Entry *en, size_t p, size_t le, int line, int seen, size_t *colon)
{
	lua_State *L = sc->L;
	if (!parse_key(sc, p, le, line, colon))
		return 0;
	lua_pushvalue(L, -1);
	lua_rawget(L, seen);
	if (!lua_isnil(L, -1)) {
		snprintf(sc->err, sizeof sc->err, "duplicate key '%.100s' (first on line %d)",
		    lua_tostring(L, -2), (int)lua_tointeger(L, -1));
		sc->errline = line;
		return 0;
	}
	lua_pop(L, 1);
	lua_pushvalue(L, -1);
	lua_pushinteger(L, line);
	lua_rawset(L, seen);
	lua_createtable(L, 0, 10);
	lua_insert(L, -2);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, line);
	lua_setfield(L, -2, "line");
	set_offset(L, "colon", *colon + 1);
	memset(en, 0, sizeof *en);
	en->open = 1;
	en->line = line;
	en->first = p;
	return 1;
}


/* Does the line at p (first non-blank at cs) continue the open entry? */
static int
continues(const Scan *sc, const Entry *en, size_t p, size_t cs, size_t le)
{
	char c = sc->s[p];
	return en->open && (cs > p || (c == '-' && (p + 1 == le || isblank_(sc->s[p + 1]))
	    && (en->cont == C_EMPTY || (en->cont == C_BLOCK && en->dash0))));
}


/*
** core.scan.yaml(text) -> array of top-level entries
**   {key=, line=, first=, last=, colon=, value_first=, value_last=, value=,
**    items= (flat flow sequences), style=}
** or nil, msg, line.
*/
static int
yaml_scan(lua_State *L)
{
	Scan sc;
	Entry en;
	size_t p = 0;
	int line = 1, res, seen, docstart = 0;
	sc.L = L;
	sc.s = luaL_checklstring(L, 1, &sc.n);
	sc.err[0] = '\0';
	sc.errline = 0;
	memset(&en, 0, sizeof en);
	lua_settop(L, 1);
	lua_newtable(L);
	res = lua_gettop(L);
	lua_newtable(L);
	seen = lua_gettop(L);
	if (!check_chars(&sc))
		goto error;
	if (sc.n >= 3 && memcmp(sc.s, "\xef\xbb\xbf", 3) == 0)
		p = 3;   /* byte order mark */
	while (p < sc.n) {
		size_t le = line_end(&sc, p), cs = p, colon, next;
		int vline = line;
		while (cs < le && isblank_(sc.s[cs]))
			cs++;
		if (!check_indent(&sc, &en, p, cs, le, line))
			goto error;
		if (cs == le || (sc.s[cs] == '#' && !(en.open && en.bscalar && cs > p))) {
			if (cs < le && en.open && en.cont == C_PLAIN)
				en.cont = C_NONE;   /* a comment line ends a plain scalar */
		} else if (continues(&sc, &en, p, cs, le)) {
			if (!continuation(&sc, &en, p, le, line))
				goto error;
		} else if (cs > p) {
			fail(&sc, en.open ? "unexpected indented line" : "expected `key: value` at column 0", line);
			goto error;
		} else if (doc_marker(&sc, p)) {
			if (!doc_start(&sc, &en, p, le, line, &docstart, res))
				goto error;
		} else if (sc.s[p] == '%') {
			fail(&sc, "directives are not supported", line);
			goto error;
		} else {
			close_entry(&sc, &en, res);
			if (!open_entry(&sc, &en, p, le, line, seen, &colon)
			    || !parse_value(&sc, &en, colon + 1, &vline, &next))
				goto error;
			line = vline + 1;
			p = next;
			continue;
		}
		p = next_line(&sc, le);
		line++;
	}
	close_entry(&sc, &en, res);
	lua_settop(L, res);
	return 1;
error:
	lua_pushnil(L);
	lua_pushstring(L, sc.err);
	lua_pushinteger(L, sc.errline);
	return 3;
}


void
yaml_open(lua_State *L)
{
	vfi_export(L, "scan", "yaml", yaml_scan);
}
