package workspace_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/workspace"
)

func parse(t *testing.T, doc string) *refs.Workspace {
	t.Helper()
	ws, err := refs.Parse([]byte(doc))
	require.NoError(t, err)
	return ws
}

// TestNodeSecretsOpenOnlyWhereTheyLive: a deploy seals credentials and inline PEM per node
// and name; Node opens the inline PEM of its node, and a value moved to another node or
// name by SQL does not open.
func TestNodeSecretsOpenOnlyWhereTheyLive(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{})
	chain, key := string(pair.ChainPEM()), string(pair.KeyPEM())
	doc, err := json.Marshal(map[string]any{"flows": []any{map[string]any{"id": "f", "nodes": []any{
		map[string]any{"id": "a", "type": "tcp-out", "tls": map[string]any{"clientCertPem": chain, "clientKeyPem": key}, "credentials": map[string]any{"password": "pw-a"}},
		map[string]any{"id": "b", "type": "tcp-out", "tls": map[string]any{"clientCertPem": chain, "clientKeyPem": key}},
	}}}})
	require.NoError(t, err)
	res, err := env.Workspace.Deploy(t.Context(), "acme", parse(t, string(doc)), 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Version)

	n, err := env.Workspace.Node(t.Context(), "acme", "f", "a")
	require.NoError(t, err)
	require.Equal(t, key, n.TLS.ClientCert.KeyPEM.Text.Reveal())
	require.Empty(t, n.Credentials, "Node never opens credentials")

	// Move a's sealed key onto b's row: b no longer opens.
	require.NoError(t, db.InTenant(t.Context(), env.Pool, "acme", func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `UPDATE node_secrets SET sealed = (SELECT sealed FROM node_secrets WHERE node_id = 'a' AND name = 'tls.clientKeyPem')
			WHERE node_id = 'b' AND name = 'tls.clientKeyPem'`)
		return err
	}))
	_, err = env.Workspace.Node(t.Context(), "acme", "f", "b")
	require.ErrorIs(t, err, envelope.ErrDecrypt)

	// The credential moved onto the key's name does not open either.
	require.NoError(t, db.InTenant(t.Context(), env.Pool, "acme", func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `UPDATE node_secrets SET sealed = (SELECT sealed FROM node_secrets WHERE node_id = 'a' AND name = 'credentials.password')
			WHERE node_id = 'a' AND name = 'tls.clientKeyPem'`)
		return err
	}))
	_, err = env.Workspace.Node(t.Context(), "acme", "f", "a")
	require.ErrorIs(t, err, envelope.ErrDecrypt)

	_, err = env.Workspace.Node(t.Context(), "acme", "f", "missing")
	require.ErrorIs(t, err, workspace.ErrNodeNotFound)
	_, err = env.Workspace.Node(t.Context(), "globex", "f", "a")
	require.ErrorIs(t, err, workspace.ErrNodeNotFound, "another tenant's node")
}

// TestDeployIsAllOrNothing: a deploy with a bad reference leaves neither the document, nor
// references, nor sealed values behind, and a stale version is refused.
func TestDeployIsAllOrNothing(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	_, err := env.Workspace.Deploy(t.Context(), "acme", parse(t, `{"flows":[{"id":"f","nodes":[
		{"id":"a","type":"tcp-out","credentials":{"password":"pw"},"tls":{"caBundleRef":"missing"}}]}]}`), 0)
	var ve *workspace.ValidationError
	require.ErrorAs(t, err, &ve)
	require.ErrorIs(t, err, workspace.ErrInvalid)
	require.Equal(t, "tls.caBundleRef", ve.Issues[0].Field)
	require.NoError(t, db.InTenant(t.Context(), env.Pool, "acme", func(tx pgx.Tx) error {
		keys, err := repo.ListNodeSecretKeys(t.Context(), tx, "acme")
		require.Empty(t, keys)
		_, gerr := repo.GetWorkspace(t.Context(), tx, "acme")
		require.True(t, errors.Is(gerr, repo.ErrNotFound))
		return err
	}))

	_, err = env.Workspace.Deploy(t.Context(), "acme", parse(t, `{"flows":[]}`), 0)
	require.NoError(t, err)
	_, err = env.Workspace.Deploy(t.Context(), "acme", parse(t, `{"flows":[]}`), 7)
	require.ErrorIs(t, err, repo.ErrVersionMismatch)
}

// TestRedeployMovesReferencesExactly: deploys that replace nodes by others referencing the
// same entries (references rewritten in place), drop some and add others leave exactly the
// references of the last workspace, with exact counts, and a referenced entry still cannot
// be deleted.
func TestRedeployMovesReferencesExactly(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	for _, id := range []string{"ca-1", "ca-2", "ca-3"} {
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: map[string]any{
			"id": id, "name": "CA", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())}})
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	}
	deploy := func(nodes map[string]string) {
		t.Helper()
		var list []any
		for id, ref := range nodes {
			list = append(list, map[string]any{"id": id, "type": "tcp-out", "tls": map[string]any{"caBundleRef": ref}})
		}
		doc, err := json.Marshal(map[string]any{"flows": []any{map[string]any{"id": "f", "nodes": list}}})
		require.NoError(t, err)
		_, err = env.Workspace.Deploy(t.Context(), "acme", parse(t, string(doc)), 0)
		require.NoError(t, err)
		var got []string
		counts := map[string]int{}
		require.NoError(t, db.InTenant(t.Context(), env.Pool, "acme", func(tx pgx.Tx) error {
			refs, err := repo.ExportReferences(t.Context(), tx, "acme")
			for _, r := range refs {
				got = append(got, r.EntryID+" "+r.FlowID+" "+r.NodeID+" "+r.NodeType+" "+r.Field)
			}
			for _, id := range []string{"ca-1", "ca-2", "ca-3"} {
				n, err := repo.CountReferences(t.Context(), tx, "acme", id)
				require.NoError(t, err)
				counts[id] = n
			}
			return err
		}))
		var want []string
		wantCounts := map[string]int{"ca-1": 0, "ca-2": 0, "ca-3": 0}
		for id, ref := range nodes {
			want = append(want, ref+" f "+id+" tcp-out tls.caBundleRef")
			wantCounts[ref]++
		}
		require.ElementsMatch(t, want, got)
		require.Equal(t, wantCounts, counts)
	}
	deploy(map[string]string{"a1": "ca-1", "a2": "ca-1", "a3": "ca-2"})
	deploy(map[string]string{"b1": "ca-1", "b2": "ca-2", "b3": "ca-2", "b4": "ca-3"})
	deploy(map[string]string{"b1": "ca-1", "c2": "ca-3", "c3": "ca-3"})
	deploy(map[string]string{"a1": "ca-2", "a2": "ca-2", "a3": "ca-2"})

	res := env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/ca-2", Token: tok})
	require.Equal(t, http.StatusConflict, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/ca-1", Token: tok})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
}
