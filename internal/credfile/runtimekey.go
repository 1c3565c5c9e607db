package credfile

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// RuntimeKeyFormat identifies a runtime key file.
const RuntimeKeyFormat = "loopze-runtime-key"

// ErrNotRuntimeKey means the bytes are not a runtime key file.
var ErrNotRuntimeKey = errors.New("not a LOOPZE runtime key file")

// RuntimeKey is what a runtime is given to open its tenant's credentials files: the file
// keys of the tenant's key versions, derived one way from them, so it opens that tenant's
// files and nothing else (not another tenant's file, not a sealed row, not the audit
// chain). `loopze-certs runtime-key` writes it; docs/keys.md describes it.
type RuntimeKey struct {
	Tenant string
	// Keys are file keys by tenant key version.
	Keys map[int]secret.Bytes
}

// runtimeKeyFile is a RuntimeKey as written: JSON, 0600.
type runtimeKeyFile struct {
	Format  string              `json:"format"`
	Version int                 `json:"version"`
	Tenant  string              `json:"tenant"`
	Keys    []runtimeKeyFileKey `json:"keys"`
}

type runtimeKeyFileKey struct {
	TenantKeyVersion int    `json:"tenantKeyVersion"`
	KeyID            string `json:"keyId"`
	Key              string `json:"key"`
}

// Marshal is the key as its file holds it.
func (k *RuntimeKey) Marshal() ([]byte, error) {
	f := runtimeKeyFile{Format: RuntimeKeyFormat, Version: 1, Tenant: k.Tenant}
	for _, v := range slices.Sorted(maps.Keys(k.Keys)) {
		f.Keys = append(f.Keys, runtimeKeyFileKey{TenantKeyVersion: v, KeyID: envelope.KeyIDOf(k.Keys[v]),
			Key: base64.StdEncoding.EncodeToString(k.Keys[v])})
	}
	return json.MarshalIndent(f, "", "  ")
}

// IsRuntimeKey reports whether data looks like a runtime key file (rather than a master
// key file, base64 of 32 bytes).
func IsRuntimeKey(data []byte) bool {
	return strings.HasPrefix(strings.TrimSpace(string(data)), "{")
}

// ParseRuntimeKey reads a runtime key file. Errors wrap ErrNotRuntimeKey and quote nothing
// of the file.
func ParseRuntimeKey(data []byte) (*RuntimeKey, error) {
	var f runtimeKeyFile
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON", ErrNotRuntimeKey)
	}
	if f.Format != RuntimeKeyFormat || f.Version != 1 || f.Tenant == "" || len(f.Keys) == 0 {
		return nil, fmt.Errorf("%w: wrong format, version, tenant or no keys", ErrNotRuntimeKey)
	}
	k := &RuntimeKey{Tenant: f.Tenant, Keys: map[int]secret.Bytes{}}
	for _, fk := range f.Keys {
		key, err := base64.StdEncoding.DecodeString(fk.Key)
		if err != nil || len(key) != sealing.TenantKeySize || fk.TenantKeyVersion < 1 {
			return nil, fmt.Errorf("%w: a key is not base64 of %d bytes", ErrNotRuntimeKey, sealing.TenantKeySize)
		}
		if envelope.KeyIDOf(key) != fk.KeyID {
			return nil, fmt.Errorf("%w: a key does not match its key ID (damaged)", ErrNotRuntimeKey)
		}
		k.Keys[fk.TenantKeyVersion] = key
	}
	return k, nil
}

// FileKey returns the file key the version 2 header h names, for Keys.FileKey. A file of
// another tenant is ErrWrongTenant; a tenant key version the runtime key does not hold is
// envelope.ErrUnknownKey, naming the version the file needs and those it holds.
func (k *RuntimeKey) FileKey(h Header) (secret.Bytes, error) {
	if h.Tenant != k.Tenant {
		return nil, fmt.Errorf("%w: the file is %s's; the runtime key opens %s's only", ErrWrongTenant, h.Tenant, k.Tenant)
	}
	if h.TenantKey == nil {
		return nil, fmt.Errorf("a version %d file has no tenant key: %w", h.Version, envelope.ErrUnknownKey)
	}
	key, ok := k.Keys[h.TenantKey.Version]
	if !ok {
		held := make([]string, 0, len(k.Keys))
		for _, v := range slices.Sorted(maps.Keys(k.Keys)) {
			held = append(held, strconv.Itoa(v))
		}
		return nil, fmt.Errorf("the file is sealed under version %d of %s's key (file key %s); the runtime key holds version(s) %s: give this runtime its new runtime key: %w",
			h.TenantKey.Version, h.Tenant, h.KeyID, strings.Join(held, ", "), envelope.ErrUnknownKey)
	}
	return append(secret.Bytes(nil), key...), nil
}

func (k *RuntimeKey) summary() string {
	if k == nil {
		return "credfile.RuntimeKey(nil)"
	}
	return fmt.Sprintf("credfile.RuntimeKey{tenant: %s, versions: %d}", k.Tenant, len(k.Keys))
}

// String implements fmt.Stringer without the keys.
func (k *RuntimeKey) String() string { return k.summary() }

// GoString implements fmt.GoStringer.
func (k *RuntimeKey) GoString() string { return k.summary() }

// Format implements fmt.Formatter, so no verb reaches the keys.
func (k *RuntimeKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.summary()) }

// LogValue implements slog.LogValuer.
func (k *RuntimeKey) LogValue() slog.Value { return slog.StringValue(k.summary()) }
