package refs

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStorable(t *testing.T) {
	t.Parallel()
	for doc, ok := range map[string]bool{
		`{"flows":[]}`:                       true,
		`{"a":"C:\\u0000"}`:                  true, // an escaped backslash, then text
		`{"a":"quote \" then \\u0000 text"}`: true,
		`{"a":"x\u0000"}`:                    false,
		`{"a\u0000":"x"}`:                    false,
		`{"a":"\"\u0000"}`:                   false,
		"{\"a\":\"\xff\"}":                   false,
		`{"a":"é ✓ \u00e9"}`:                 true,
		`{"a":"\\\u0000"}`:                   false, // an escaped backslash, then a NUL
	} {
		err := scan([]byte(doc))
		if ok {
			require.NoError(t, err, doc)
			continue
		}
		require.True(t, errors.Is(err, ErrUnstorable), doc)
		_, perr := Parse([]byte(doc))
		require.ErrorIs(t, perr, ErrUnstorable, doc)
	}
}
