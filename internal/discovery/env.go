package discovery

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxEnvSize bounds what ParseEnv reads: etcd.env is a few KiB.
const maxEnvSize = 1 << 20

// ParseEnv reads a shell environment file of the form the etcd operator
// writes (`export KEY="value"`). It accepts KEY=value with or without
// `export`, double quotes (with the shell's \" \\ \$ \` escapes), single
// quotes, unquoted words, comments, blank lines and CRLF line ends. Nothing is
// expanded: `$VAR` stays literal, because the file is data here and must not
// make the caller's result depend on the caller's environment. A later
// assignment to a key wins, as in the shell.
func ParseEnv(r io.Reader) (map[string]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEnvSize+1))
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	if len(data) > maxEnvSize {
		return nil, fmt.Errorf("env file is larger than %d bytes", maxEnvSize)
	}
	env := make(map[string]string)
	for i, line := range strings.Split(string(data), "\n") {
		key, value, ok, err := parseLine(strings.TrimSuffix(line, "\r"))
		if err != nil {
			return nil, fmt.Errorf("env file line %d: %w", i+1, err)
		}
		if ok {
			env[key] = value
		}
	}
	return env, nil
}

// parseLine returns the assignment on line; ok is false for blank lines and
// comments.
func parseLine(line string) (key, value string, ok bool, err error) {
	line = strings.Trim(line, " \t")
	if line == "" || line[0] == '#' {
		return "", "", false, nil
	}
	if rest, found := strings.CutPrefix(line, "export"); found && rest != "" && isBlank(rest[0]) {
		line = strings.TrimLeft(rest, " \t")
	}
	key, raw, found := strings.Cut(line, "=")
	if !found {
		return "", "", false, errors.New("expected KEY=value")
	}
	if !validKey(key) {
		return "", "", false, fmt.Errorf("invalid variable name %q", key)
	}
	value, rest, err := parseValue(raw)
	if err != nil {
		return "", "", false, fmt.Errorf("value of %s: %w", key, err)
	}
	// Anything after the value must be a comment, as the shell would see it:
	// `K="a"b` concatenates and `K=a b` runs a command, neither of which a
	// data file should do.
	if trimmed := strings.TrimLeft(rest, " \t"); trimmed != "" && (trimmed == rest || trimmed[0] != '#') {
		return "", "", false, fmt.Errorf("value of %s: unexpected %q after value", key, trimmed)
	}
	return key, value, true, nil
}

// parseValue splits s into its leading shell word and what follows it.
func parseValue(s string) (value, rest string, err error) {
	switch {
	case s == "":
		return "", "", nil
	case s[0] == '\'':
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", "", errors.New("unterminated single quote")
		}
		return s[1 : 1+end], s[2+end:], nil
	case s[0] == '"':
		return parseDoubleQuoted(s)
	}
	end := strings.IndexAny(s, " \t")
	if end < 0 {
		end = len(s)
	}
	if strings.ContainsAny(s[:end], `"'\`) {
		return "", "", fmt.Errorf("unsupported quoting in %q", s[:end])
	}
	return s[:end], s[end:], nil
}

// parseDoubleQuoted reads a double-quoted word starting at s[0]. A backslash
// escapes only the characters the shell lets it escape inside double quotes;
// before anything else it is kept.
func parseDoubleQuoted(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
			b.WriteByte(s[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated double quote")
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// validKey reports whether k is a shell variable name.
func validKey(k string) bool {
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
