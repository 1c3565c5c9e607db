package sealing

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"strconv"

	"github.com/loopze/certstore/internal/secret"
)

// TenantKeySize is the size of a tenant key and of every key derived from it.
const TenantKeySize = 32

// The purposes a tenant key is derived for (HKDF's info names them).
const (
	// PurposeSeal derives the key that wraps the data keys of the tenant's sealed values.
	PurposeSeal = "seal"
	// PurposeFile derives the key that seals the tenant's credentials.json: a runtime key.
	PurposeFile = "file"
	// PurposeAudit derives the HMAC key of the tenant's audit chain.
	PurposeAudit = "audit"
)

// TenantKeyWrap is what a tenant key's wrap under the master key is bound to: the tenant
// and the version, so a wrapped key copied to another tenant or version does not unwrap
// ("loopze/tenant-key/v1", NUL, tenant, NUL, version in decimal).
func TenantKeyWrap(tenant string, version int) []byte {
	return []byte("loopze/tenant-key/v1\x00" + tenant + "\x00" + strconv.Itoa(version))
}

// DeriveTenantKey is the key version version of tenant's key (root) derives for purpose:
// HKDF-SHA-256 with no salt and the info "loopze/tenant-key/v1/<purpose>", NUL, tenant,
// NUL, version. docs/keys.md gives the exact bytes.
func DeriveTenantKey(root []byte, purpose, tenant string, version int) (secret.Bytes, error) {
	info := "loopze/tenant-key/v1/" + purpose + "\x00" + tenant + "\x00" + strconv.Itoa(version)
	k, err := hkdf.Key(sha256.New, root, nil, info, TenantKeySize)
	if err != nil {
		return nil, fmt.Errorf("derive the %s key of %s version %d: %w", purpose, tenant, version, err)
	}
	return secret.Bytes(k), nil
}
