package material

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
)

// maxOrderedChain bounds the certificates of a pair that are put in order: linking is
// quadratic in signature checks, and no real chain is longer than a handful.
const maxOrderedChain = 32

// orderChain drops duplicate certificates and, for a pair, puts the chain in order: the
// leaf first (the certificate of key when known, else the one that issues no other), then
// each certificate's issuer in turn; certificates that link to nothing follow in the order
// given, and Inspect's chain check reports the break. Bundles keep their order. Positions
// in warnings count from 1 in the order the certificates were given.
func orderChain(k Kind, certs []*x509.Certificate, key crypto.PublicKey, field string, sigs *sigChecks) ([]*x509.Certificate, []Issue, bool) {
	var ws []Issue
	warn := func(format string, args ...any) {
		ws = append(ws, Issue{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	type given struct {
		c *x509.Certificate
		n int // position given, from 0
	}
	var uniq []given
	for i, c := range certs {
		dup := slices.IndexFunc(uniq, func(g given) bool { return bytes.Equal(g.c.Raw, c.Raw) })
		if dup >= 0 {
			warn("%s is a duplicate of certificate %d and was dropped", certName(i, c), uniq[dup].n+1)
			continue
		}
		uniq = append(uniq, given{c, i})
	}
	changed := len(uniq) != len(certs)
	if !k.IsPair() || len(uniq) < 2 || len(uniq) > maxOrderedChain {
		out := make([]*x509.Certificate, len(uniq))
		for i, g := range uniq {
			out[i] = g.c
		}
		return out, ws, changed
	}

	issues := func(issuer, c *x509.Certificate) bool {
		return issuer != c && bytes.Equal(c.RawIssuer, issuer.RawSubject) && sigs.check(c, issuer) == nil
	}
	leaf := -1
	if key != nil {
		leaf = slices.IndexFunc(uniq, func(g given) bool { return publicKeysEqual(g.c.PublicKey, key) })
	}
	if leaf < 0 {
		leaf = slices.IndexFunc(uniq, func(g given) bool {
			return !slices.ContainsFunc(uniq, func(o given) bool { return issues(g.c, o.c) })
		})
	}
	if leaf < 0 {
		leaf = 0
	}
	out := []given{uniq[leaf]}
	rest := slices.Delete(slices.Clone(uniq), leaf, leaf+1)
	for {
		cur := out[len(out)-1].c
		next := slices.IndexFunc(rest, func(g given) bool { return issues(g.c, cur) })
		if next < 0 {
			break
		}
		out = append(out, rest[next])
		rest = slices.Delete(rest, next, next+1)
	}
	out = append(out, rest...)
	ordered := make([]*x509.Certificate, len(out))
	moved := false
	for i, g := range out {
		ordered[i] = g.c
		if g != uniq[i] {
			moved = true
		}
	}
	if moved {
		warn("the certificates were not in order and were reordered leaf first, then each issuer: %s", orderText(out, func(g given) (int, *x509.Certificate) { return g.n, g.c }))
	}
	return ordered, ws, changed || moved
}

func orderText[T any](items []T, at func(T) (int, *x509.Certificate)) string {
	var b bytes.Buffer
	for i, it := range items {
		if i > 0 {
			b.WriteString(", then ")
		}
		n, c := at(it)
		b.WriteString(certName(n, c))
		if b.Len() > 300 {
			b.WriteString(", …")
			break
		}
	}
	return b.String()
}

// sigChecks remembers the signature checks of one Decode, so that putting a chain in order
// and then checking that it links verifies each signature once. The certificates are
// told apart by their bytes: normalize and Inspect parse them separately. A nil
// *sigChecks remembers nothing.
type sigChecks struct{ done map[[2]string]error }

func newSigChecks() *sigChecks { return &sigChecks{done: map[[2]string]error{}} }

// check is c.CheckSignatureFrom(issuer), once per pair of certificates.
func (s *sigChecks) check(c, issuer *x509.Certificate) error {
	if s == nil {
		return c.CheckSignatureFrom(issuer)
	}
	k := [2]string{string(c.Raw), string(issuer.Raw)}
	if err, ok := s.done[k]; ok {
		return err
	}
	err := c.CheckSignatureFrom(issuer)
	s.done[k] = err
	return err
}
