package catalog_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func setup(t *testing.T) *catalog.Service {
	t.Helper()
	pool, err := db.Open(context.Background(), testdb.URL(t), logging.Discard())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	keys := tenantkeytest.New(t, pool, t.TempDir())
	return &catalog.Service{Pool: pool, Keys: keys, Logger: logging.Discard()}
}

func ptr(s string) *string { return &s }

func pairInput(id string, c *materialtest.Cert) catalog.Input {
	return catalog.Input{ID: id, Name: ptr(id), Type: ptr("client-pair"), Source: ptr(catalog.SourceInline),
		CertPEM: secret.PEM(c.ChainPEM()), KeyPEM: secret.PEM(c.KeyPEM())}
}

// sealed reads an entry's row with its sealed material.
func sealed(t *testing.T, s *catalog.Service, tenant, id string) *repo.Entry {
	t.Helper()
	found, err := repo.LookupEntries(t.Context(), s.Pool, tenant, []string{id})
	require.NoError(t, err)
	require.Len(t, found, 1)
	return found[0]
}

func TestSealedMaterialOpensOnlyWhereItLives(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	a, b := ca.Issue(t, materialtest.Options{}), ca.Issue(t, materialtest.Options{})
	_, err := s.Create(t.Context(), "acme", pairInput("a", a))
	require.NoError(t, err)
	_, err = s.Create(t.Context(), "acme", pairInput("b", b))
	require.NoError(t, err)

	ea := sealed(t, s, "acme", "a")
	cert, key, err := s.Open(context.Background(), ea)
	require.NoError(t, err)
	require.Equal(t, string(a.ChainPEM()), string(cert))
	require.Equal(t, string(a.KeyPEM()), string(key))

	// a's ciphertexts under b's name, in another tenant, or swapped between fields: refused.
	eb := sealed(t, s, "acme", "b")
	moved := *eb
	moved.Sealed.Cert, moved.Sealed.Key = ea.Sealed.Cert, ea.Sealed.Key
	_, _, err = s.Open(context.Background(), &moved)
	require.ErrorIs(t, err, envelope.ErrDecrypt)
	other := *ea
	other.TenantID = "globex"
	_, _, err = s.Open(context.Background(), &other)
	require.ErrorIs(t, err, envelope.ErrUnknownKey, "another tenant's keys do not hold acme's")
	swapped := *ea
	swapped.Sealed.Cert, swapped.Sealed.Key = ea.Sealed.Key, ea.Sealed.Cert
	_, _, err = s.Open(context.Background(), &swapped)
	require.ErrorIs(t, err, envelope.ErrDecrypt)
}

func TestPutOfNotesKeepsTheCiphertext(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	_, err := s.Create(t.Context(), "acme", pairInput("a", ca.Issue(t, materialtest.Options{})))
	require.NoError(t, err)
	before := sealed(t, s, "acme", "a")

	res, err := s.Put(t.Context(), "acme", catalog.Input{ID: "a", Notes: ptr("rotated yearly")}, catalog.Precondition{Version: before.Version})
	require.NoError(t, err)
	require.False(t, res.Created)
	after := sealed(t, s, "acme", "a")
	require.Equal(t, before.Sealed.Cert, after.Sealed.Cert)
	require.Equal(t, before.Sealed.Key, after.Sealed.Key)
	require.Equal(t, "rotated yearly", after.Notes)
	require.Equal(t, before.Meta.FingerprintSHA256, after.Meta.FingerprintSHA256)

	// New material is sealed afresh and re-derives the metadata.
	c := ca.Issue(t, materialtest.Options{})
	_, err = s.Put(t.Context(), "acme", pairInput("a", c), catalog.Precondition{})
	require.NoError(t, err)
	renewed := sealed(t, s, "acme", "a")
	require.NotEqual(t, before.Sealed.Cert, renewed.Sealed.Cert)
	require.NotEqual(t, before.Meta.FingerprintSHA256, renewed.Meta.FingerprintSHA256)
	cert, _, err := s.Open(context.Background(), renewed)
	require.NoError(t, err)
	require.Equal(t, string(c.ChainPEM()), string(cert))

	_, err = s.Put(t.Context(), "acme", catalog.Input{ID: "a", Notes: ptr("x")}, catalog.Precondition{Version: before.Version})
	require.ErrorIs(t, err, repo.ErrVersionMismatch)
}

func TestCreateRefusesWithEveryIssue(t *testing.T) {
	t.Parallel()
	s := setup(t)
	in := catalog.Input{ID: "Bad ID", Name: ptr(""), Type: ptr("pair"), Source: ptr("inline"), Notes: ptr("-----BEGIN PRIVATE KEY-----")}
	_, err := s.Create(t.Context(), "acme", in)
	var ve *catalog.ValidationError
	require.ErrorAs(t, err, &ve)
	require.ErrorIs(t, err, catalog.ErrInvalid)
	var fields []string
	for _, is := range ve.Issues {
		fields = append(fields, is.Field)
	}
	require.ElementsMatch(t, []string{"id", "name", "type", "notes"}, fields)
	_, err = s.Get(t.Context(), "acme", "bad-id")
	require.ErrorIs(t, err, repo.ErrNotFound)
}
