package refs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Bounds of a workspace document. They keep what one deploy may cost the server (memory
// to read it, bytes to store and export it) proportional to what was sent, whatever the
// content. The OpenAPI document states them.
const (
	// MaxBytes bounds the document as sent.
	MaxBytes = 8 << 20
	// MaxFlows bounds the flows of a workspace.
	MaxFlows = 2000
	// MaxNodes bounds the nodes of a workspace, all flows together.
	MaxNodes = 20000
	// MaxNodeProperties bounds the properties of one node (tls and credentials count as one each).
	MaxNodeProperties = 200
	// MaxDepth bounds how deeply objects and arrays nest, the workspace object being depth 1.
	MaxDepth = 32
	// MaxNumberDigits bounds a number written out in plain decimal. PostgreSQL's jsonb
	// stores numbers exactly and writes them back without an exponent, so 1e300 would
	// come back as 301 digits: a few bytes in could be kilobytes out.
	MaxNumberDigits = 40
)

// ErrRefused marks a document that is valid JSON but breaks a rule of what may be stored:
// a bound above, PEM armour outside the sealed fields, a duplicated property name.
var ErrRefused = errors.New("document refused")

// pemArmour starts every PEM block. Certificates and keys belong in the sealed fields; in
// any other property they would be stored and shown in clear.
const pemArmour = "-----BEGIN"

// pemPlaces says where PEM may appear: the tls block's inline fields and node credentials,
// which are sealed at rest and never returned.
const pemPlaces = "PEM belongs in a store entry (POST /api/v1/certs) or, sealed, in the node's tls " +
	"caBundlePem/clientCertPem/clientKeyPem/serverCertPem/serverKeyPem or credentials"

// scan checks a workspace document in one pass before it is parsed: UTF-8, no NUL, no
// duplicated names, nesting, numbers and PEM armour. Errors are *FieldError naming the
// JSON path, and never quote the document.
func scan(data []byte) error {
	if !utf8.Valid(data) {
		return &FieldError{Path: "body", Message: "must be UTF-8 text", Err: ErrUnstorable}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return scanError(err)
		}
		if d := dec.StackDepth(); d > MaxDepth {
			return &FieldError{Path: path(dec.StackPointer()), Message: fmt.Sprintf("nests deeper than %d levels", MaxDepth), Err: ErrRefused}
		}
		switch tok.Kind() {
		case '"':
			s := tok.String()
			if strings.IndexByte(s, 0) >= 0 {
				return &FieldError{Path: path(dec.StackPointer()), Message: "strings must not contain \\u0000 (NUL cannot be stored)", Err: ErrUnstorable}
			}
			if strings.Contains(s, pemArmour) && !pemAllowed(dec.StackPointer(), isName(dec)) {
				return &FieldError{Path: path(dec.StackPointer()), Message: "must not hold PEM (-----BEGIN ...): it would be stored and shown in clear. " + pemPlaces, Err: ErrRefused}
			}
		case '0':
			if msg := checkNumber(tok.String()); msg != "" {
				return &FieldError{Path: path(dec.StackPointer()), Message: msg, Err: ErrRefused}
			}
		}
		if dec.StackDepth() == 0 {
			break
		}
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return &FieldError{Path: "body", Message: "unexpected data after the workspace object"}
	}
	return nil
}

// isName reports whether the string just read is an object member's name.
func isName(dec *jsontext.Decoder) bool {
	k, n := dec.StackIndex(dec.StackDepth())
	return k == '{' && n%2 == 1
}

// scanError turns a decoder error into a *FieldError that quotes nothing of the input.
func scanError(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		if errors.Is(se.Err, jsontext.ErrDuplicateName) {
			return &FieldError{Path: path(se.JSONPointer), Message: "is given twice; property names must be unique", Err: ErrRefused}
		}
		return &FieldError{Path: "body", Message: fmt.Sprintf("malformed JSON at byte %d", se.ByteOffset)}
	}
	return &FieldError{Path: "body", Message: "malformed JSON"}
}

// pemAllowed reports whether the value at p may hold PEM: a node credential's value or an
// inline PEM field of a node's tls block (/flows/i/nodes/j/credentials/k or
// /flows/i/nodes/j/tls/clientKeyPem). A name never may.
func pemAllowed(p jsontext.Pointer, name bool) bool {
	if name {
		return false
	}
	var toks []string
	for t := range p.Tokens() {
		if toks = append(toks, t); len(toks) > 6 {
			break
		}
	}
	if len(toks) < 6 || toks[0] != "flows" || toks[2] != "nodes" {
		return false
	}
	switch toks[4] {
	case "credentials": // a value of another type than string is refused when parsed
		return true
	case "tls":
		for _, part := range Parts {
			if len(toks) == 6 && (toks[5] == part.CertPEM || (part.KeyPEM != "" && toks[5] == part.KeyPEM)) {
				return true
			}
		}
	}
	return false
}

// path turns a JSON pointer into the dotted path error details use:
// /flows/0/nodes/2/tls/caBundleRef is flows[0].nodes[2].tls.caBundleRef.
func path(p jsontext.Pointer) string {
	var b strings.Builder
	for t := range p.Tokens() {
		if _, err := strconv.ParseUint(t, 10, 32); err == nil && b.Len() > 0 {
			b.WriteString("[" + t + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	if b.Len() == 0 {
		return "body"
	}
	return b.String()
}

// checkNumber says what is wrong with a JSON number literal, or "". A number must be one
// a JSON reader can hold (a finite float64) and short when written in plain decimal, as
// jsonb writes it back.
func checkNumber(lit string) string {
	if _, err := strconv.ParseFloat(lit, 64); err != nil {
		return "is a number outside what a JSON reader can hold (a 64-bit float)"
	}
	if n := decimalLen(lit); n > MaxNumberDigits {
		return fmt.Sprintf("is a number that takes %d digits in plain decimal; at most %d are allowed", n, MaxNumberDigits)
	}
	return ""
}

// decimalLen is how many characters lit (a valid JSON number) takes in plain decimal
// without an exponent, leaving out leading and trailing zeros that carry no value.
func decimalLen(lit string) int {
	lit = strings.TrimPrefix(lit, "-")
	mant, exp := lit, 0
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant = lit[:i]
		e, err := strconv.Atoi(lit[i+1:])
		if err != nil { // an exponent beyond int: certainly too long
			return MaxNumberDigits + 1_000_000
		}
		exp = e
	}
	if exp > 1_000_000 || exp < -1_000_000 {
		return MaxNumberDigits + 1_000_000
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return 1 // zero
	}
	// The value is 0.digits × 10^point.
	point := len(intPart) - (len(intPart+frac) - len(digits)) + exp
	digits = strings.TrimRight(digits, "0")
	switch {
	case point >= len(digits): // an integer: digits then zeros
		return point
	case point > 0: // digits with a decimal point inside
		return len(digits) + 1
	default: // 0.000digits
		return 2 - point + len(digits)
	}
}
