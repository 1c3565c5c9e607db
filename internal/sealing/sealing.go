// Package sealing owns the vocabulary of sealed values: what each sealed value is bound to
// (its additional authenticated data) and how a sealed value is opened when another
// process may have rotated the master key. internal/envelope does the cryptography; this
// package says where a value lives, once, so that the catalogue, the deploy service, the
// export job, key rotation and doctor cannot drift apart. The layouts are pinned byte for
// byte by golden ciphertexts in testdata: changing one would make stored rows unreadable.
package sealing

import (
	"errors"
	"strconv"

	"github.com/loopze/certstore/internal/envelope"
)

// The sealed fields of an inline entry.
const (
	// FieldCert is an entry's certificate chain.
	FieldCert = "certPem"
	// FieldKey is an entry's private key.
	FieldKey = "keyPem"
)

// Entry is where a sealed field of a catalogue entry lives: tenant, "entry:"+id and the
// field (FieldCert or FieldKey).
func Entry(tenant, entryID, field string) envelope.AAD {
	return envelope.AAD{Tenant: tenant, Owner: "entry:" + entryID, Field: field}
}

// EntryVersion is where a sealed field of one version of an entry's history lives:
// tenant, "entry-version:<id>:<version>" and the field. Entry IDs hold no colon, so the
// owner never equals an entry's own, and a version's ciphertext opens neither in its
// entry's row nor in another version's.
func EntryVersion(tenant, entryID string, version int64, field string) envelope.AAD {
	return envelope.AAD{Tenant: tenant, Owner: "entry-version:" + entryID + ":" + strconv.FormatInt(version, 10), Field: field}
}

// NodeSecret is where a node's sealed value lives: tenant, "node:"+nodeID and the secret's
// name ("credentials.<key>" or "tls.<field>").
func NodeSecret(tenant, nodeID, name string) envelope.AAD {
	return envelope.AAD{Tenant: tenant, Owner: "node:" + nodeID, Field: name}
}

// FileFormat names the credentials.json format in its header and its AAD.
const FileFormat = "loopze-credentials"

// File is the additional authenticated data of a credentials.json body: the format and
// its version, NUL, the tenant, NUL, the generation in decimal
// ("loopze-credentials/v1\x00acme\x0042"). docs/credentials-format.md describes it.
func File(version int, tenant string, generation int64) []byte {
	b := make([]byte, 0, len(FileFormat)+len(tenant)+24)
	b = append(b, FileFormat...)
	b = append(b, "/v"...)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, 0)
	b = append(b, tenant...)
	b = append(b, 0)
	return strconv.AppendInt(b, generation, 10)
}

// Open opens blob for the place aad names. When the blob names a master key the ring does
// not hold (another replica or a rotate-key run wrote a new one), it reloads the ring from
// its data directory once and tries again.
func Open(ring *envelope.Ring, blob []byte, aad envelope.AAD) ([]byte, error) {
	pt, err := ring.Open(blob, aad)
	if errors.Is(err, envelope.ErrUnknownKey) {
		if rerr := ring.Reload(); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		pt, err = ring.Open(blob, aad)
	}
	return pt, err
}

// FileWithKey is the additional authenticated data of a version 2 credentials file, sealed
// under the file key of a tenant key version: File's bytes, then NUL, the key ID, NUL, the
// tenant key version in decimal, NUL, the master key ID, NUL, the wrapped tenant key as the
// header carries it (base64). Every field of the header is bound, so a file whose header
// names another key, version or wrapping does not open.
func FileWithKey(version int, tenant string, generation int64, keyID string, tenantKeyVersion int, masterKeyID, wrapped string) []byte {
	b := File(version, tenant, generation)
	b = append(b, 0)
	b = append(b, keyID...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(tenantKeyVersion), 10)
	b = append(b, 0)
	b = append(b, masterKeyID...)
	b = append(b, 0)
	return append(b, wrapped...)
}
