package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/repo"
)

// Document is a saved workspace as it is read: written out as GET /api/v1/flows answers it
// (WriteTo), or parsed from that same output (Workspace). Both show stored values the one
// way WriteTo writes them, as {"set": true} markers.
type Document struct {
	Version   int64
	UpdatedAt time.Time
	doc       []byte
	keys      []repo.NodeSecretKey
	secrets   map[string][]repo.NodeSecretKey // keys by node
}

// Document reads the tenant's saved workspace, its stored document and the names of its
// node secrets, never their values. A tenant that never deployed has an empty workspace at
// version 0.
func (s *Service) Document(ctx context.Context, tenant string) (*Document, error) {
	var (
		row  *repo.Workspace
		keys []repo.NodeSecretKey
	)
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		if row, err = repo.GetWorkspace(ctx, tx, tenant); err != nil {
			return err
		}
		keys, err = repo.ListNodeSecretKeys(ctx, tx, tenant)
		return err
	})
	if errors.Is(err, repo.ErrNotFound) {
		return &Document{}, nil
	}
	if err != nil {
		return nil, err
	}
	d := &Document{Version: row.Version, UpdatedAt: row.UpdatedAt, doc: row.Flows, keys: keys, secrets: map[string][]repo.NodeSecretKey{}}
	for _, k := range keys {
		d.secrets[k.NodeID] = append(d.secrets[k.NodeID], k)
	}
	return d, nil
}

// WriteTo writes the workspace to w as compact JSON, with {"set": true} markers where
// values are stored (credentials by key, inline PEM by field), so that it deploys back
// unchanged. It streams token by token: besides the stored document it holds no copy of
// the workspace or of any node, so several readers of the largest workspace stay within a
// small multiple of its size.
//
// The markers are added as the objects close. That relies on the order jsonb keeps an
// object's keys in (shorter names first), which puts a node's "id" before its "tls": the
// node is known by the time its tls block and the node itself end.
func (d *Document) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	if d.doc == nil {
		_, err := io.WriteString(cw, `{"flows":[]}`)
		return cw.n, err
	}
	dec := jsontext.NewDecoder(bytes.NewReader(d.doc), jsontext.AllowDuplicateNames(true))
	enc := jsontext.NewEncoder(cw, jsontext.AllowDuplicateNames(true))
	var (
		nodeDepth int    // stack depth of the node object being copied, 0 outside one
		tlsDepth  int    // stack depth of that node's tls object, 0 outside it
		node      string // the node's ID once read
		lastName  string // the last object member name read
	)
	for {
		depth := dec.StackDepth()
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return cw.n, nil
		}
		if err != nil {
			return cw.n, fmt.Errorf("read saved workspace: %w", err)
		}
		kind := tok.Kind()
		switch {
		case kind == '{' && depth == 4 && nodeDepth == 0 && d.inNodes(dec):
			nodeDepth, node = depth+1, ""
		case kind == '{' && nodeDepth > 0 && depth == nodeDepth && lastName == "tls":
			tlsDepth = depth + 1
		case kind == '}' && tlsDepth > 0 && depth == tlsDepth:
			tlsDepth = 0
			if err := writeMarkers(enc, d.tlsMarkers(node)); err != nil {
				return cw.n, err
			}
		case kind == '}' && nodeDepth > 0 && depth == nodeDepth:
			nodeDepth = 0
			if creds := d.credentialMarkers(node); len(creds) > 0 {
				if err := enc.WriteToken(jsontext.String("credentials")); err != nil {
					return cw.n, fmt.Errorf("write workspace: %w", err)
				}
				if err := enc.WriteToken(jsontext.BeginObject); err != nil {
					return cw.n, fmt.Errorf("write workspace: %w", err)
				}
				if err := writeMarkers(enc, creds); err != nil {
					return cw.n, err
				}
				if err := enc.WriteToken(jsontext.EndObject); err != nil {
					return cw.n, fmt.Errorf("write workspace: %w", err)
				}
			}
		case kind == '"':
			if k, n := dec.StackIndex(dec.StackDepth()); k == '{' && n%2 == 1 {
				lastName = tok.String()
			} else if nodeDepth > 0 && depth == nodeDepth && lastName == "id" {
				node = tok.String()
			}
		}
		if err := enc.WriteToken(tok); err != nil {
			return cw.n, fmt.Errorf("write workspace: %w", err)
		}
	}
}

// Workspace parses what WriteTo writes into the workspace model: every node as deployed,
// and a Keep value wherever a credential or inline PEM is stored, so a caller that changes
// the model and deploys it back (at Version) keeps every stored value it did not touch.
func (d *Document) Workspace() (*refs.Workspace, error) {
	var buf bytes.Buffer
	buf.Grow(len(d.doc) + 64)
	if _, err := d.WriteTo(&buf); err != nil {
		return nil, err
	}
	ws, err := refs.ParseStored(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("decode saved workspace: %w", err)
	}
	return ws, nil
}

// inNodes reports whether the decoder is inside a flow's nodes array (/flows/i/nodes).
func (d *Document) inNodes(dec *jsontext.Decoder) bool {
	if k, _ := dec.StackIndex(4); k != '[' {
		return false
	}
	if k, _ := dec.StackIndex(2); k != '[' {
		return false
	}
	p := dec.StackPointer().Parent()
	return p.Parent().Parent().LastToken() == "flows" && p.LastToken() == "nodes"
}

var marker = jsontext.Value(`{"set":true}`)

// writeMarkers writes name: {"set": true} for each name.
func writeMarkers(enc *jsontext.Encoder, names []string) error {
	for _, n := range names {
		if err := enc.WriteToken(jsontext.String(n)); err != nil {
			return fmt.Errorf("write workspace: %w", err)
		}
		if err := enc.WriteValue(marker); err != nil {
			return fmt.Errorf("write workspace: %w", err)
		}
	}
	return nil
}

// credentialMarkers are the credential keys stored for node, sorted.
func (d *Document) credentialMarkers(node string) []string {
	var out []string
	for _, k := range d.secrets[node] {
		if key, ok := refs.IsCredentialName(k.Name); ok {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tlsMarkers are the inline PEM fields stored for node's tls block, in part order.
func (d *Document) tlsMarkers(node string) []string {
	have := map[string]bool{}
	for _, k := range d.secrets[node] {
		if f, ok := strings.CutPrefix(k.Name, "tls."); ok {
			have[f] = true
		}
	}
	var out []string
	for _, p := range refs.Parts {
		for _, f := range []string{p.CertPEM, p.KeyPEM} {
			if f != "" && have[f] {
				out = append(out, f)
			}
		}
	}
	return out
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
