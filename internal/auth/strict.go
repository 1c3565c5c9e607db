package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// knownClaims are the claim names a token is judged by. encoding/json, which jwt decodes
// claims with, matches names case-insensitively and lets a repeated name overwrite the
// first, so {"tenant":"acme","TENANT":"globex"} would come out as globex. strictToken runs
// first and refuses both, so each of these is read from exactly its own name.
var knownClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "tenant", "role"}

// numericDateClaims must be JSON numbers (RFC 7519 section 2, NumericDate); jwt would also
// take a string holding digits.
var numericDateClaims = map[string]bool{"exp": true, "nbf": true, "iat": true}

// maxJSONDepth bounds nesting in a token's header and claims; real tokens nest two deep.
const maxJSONDepth = 16

// strictToken checks what the jwt parser lets through in a compact token's header and
// claims: a name given twice (at any depth), a registered or LOOPZE claim spelled in
// another case, exp/nbf/iat that are not numbers, and any crit header (RFC 7515 section
// 4.1.11: a recipient must refuse extensions it does not understand, and this one
// understands none). Messages name our claims, never the token's own names or values.
func strictToken(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("token is not three dot-separated segments")
	}
	header, err := strictSegment(parts[0], "header")
	if err != nil {
		return err
	}
	if _, ok := header["crit"]; ok {
		return errors.New("token header has crit: no JWS extension is supported")
	}
	claims, err := strictSegment(parts[1], "claims")
	if err != nil {
		return err
	}
	for name, kind := range claims {
		for _, known := range knownClaims {
			if name != known && strings.EqualFold(name, known) {
				return fmt.Errorf("claims name %s in another case: claim names are exact", known)
			}
		}
		if numericDateClaims[name] && kind != kindNumber {
			return fmt.Errorf("claim %s is not a number", name)
		}
	}
	return nil
}

// JSON value kinds, as strictSegment reports them for top-level members.
const (
	kindObject = iota
	kindArray
	kindString
	kindNumber
	kindBool
	kindNull
)

// strictSegment decodes one base64url segment holding a JSON object and returns the kind
// of each top-level member, refusing repeated names at any depth.
func strictSegment(seg, what string) (map[string]int, error) {
	data, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("token %s is not base64url", what)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("token %s is not a JSON object", what)
	}
	members := map[string]int{}
	if err := readMembers(dec, 1, members); err != nil {
		return nil, fmt.Errorf("token %s: %w", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("token %s has data after the JSON object", what)
	}
	return members, nil
}

// errBadJSON hides the decoder's message, which quotes bytes of the token.
var errBadJSON = errors.New("not valid JSON")

// readMembers reads an object's members after its '{' up to and including its '}'. When
// top is non-nil it receives each member's kind.
func readMembers(dec *json.Decoder, depth int, top map[string]int) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errBadJSON
		}
		name, ok := tok.(string)
		if !ok {
			return errBadJSON
		}
		if seen[name] {
			for _, known := range knownClaims {
				if name == known {
					return fmt.Errorf("%s is given twice", known)
				}
			}
			return errors.New("a name is given twice")
		}
		seen[name] = true
		kind, err := readValue(dec, depth)
		if err != nil {
			return err
		}
		if top != nil {
			top[name] = kind
		}
	}
	if _, err := dec.Token(); err != nil {
		return errBadJSON
	}
	return nil
}

func readValue(dec *json.Decoder, depth int) (int, error) {
	tok, err := dec.Token()
	if err != nil {
		return 0, errBadJSON
	}
	switch v := tok.(type) {
	case json.Delim:
		if depth >= maxJSONDepth {
			return 0, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
		}
		if v == '{' {
			return kindObject, readMembers(dec, depth+1, nil)
		}
		for dec.More() {
			if _, err := readValue(dec, depth+1); err != nil {
				return 0, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return 0, errBadJSON
		}
		return kindArray, nil
	case string:
		return kindString, nil
	case json.Number:
		return kindNumber, nil
	case bool:
		return kindBool, nil
	case nil:
		return kindNull, nil
	}
	return 0, errBadJSON
}
