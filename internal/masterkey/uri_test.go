package masterkey_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/masterkey"
)

const exampleURI = "pkcs11:token=loopze;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/loopze/pin"

// TestParsePKCS11URI: the attributes of RFC 7512 that select a token and an object, with
// percent-encoding, and the query's module and PIN.
func TestParsePKCS11URI(t *testing.T) {
	t.Parallel()
	u, err := masterkey.ParsePKCS11URI(exampleURI)
	require.NoError(t, err)
	require.Equal(t, "loopze", u.Token)
	require.Equal(t, "master", u.Object)
	require.Equal(t, "/usr/lib/softhsm/libsofthsm2.so", u.ModulePath)
	require.Equal(t, "/etc/loopze/pin", u.PINSource)
	require.Nil(t, u.ID)
	require.Equal(t, exampleURI, u.String())

	u, err = masterkey.ParsePKCS11URI("PKCS11:token=My%20Token;manufacturer=SoftHSM%20project;serial=ea9f;model=SoftHSM%20v2;" +
		"slot-id=7;slot-description=SoftHSM%20slot;slot-manufacturer=x;library-manufacturer=y;library-description=z;" +
		"object=master%3Bkey;id=%01%FF;type=secret-key?module-path=/opt/hsm/lib.so&pin-source=file:///run/credentials/loopze/pin")
	require.NoError(t, err)
	require.Equal(t, "My Token", u.Token)
	require.Equal(t, "SoftHSM project", u.Manufacturer)
	require.Equal(t, "ea9f", u.Serial)
	require.Equal(t, "SoftHSM v2", u.Model)
	require.True(t, u.HasSlotID)
	require.Equal(t, uint(7), u.SlotID)
	require.Equal(t, "SoftHSM slot", u.SlotDescription)
	require.Equal(t, "master;key", u.Object)
	require.Equal(t, []byte{0x01, 0xff}, u.ID)
	require.Equal(t, "/run/credentials/loopze/pin", u.PINSource)

	u, err = masterkey.ParsePKCS11URI("pkcs11:object=master?module-path=/m.so&pin-value=12%2034")
	require.NoError(t, err)
	require.Equal(t, "12 34", u.PINValue.Reveal())
	require.Equal(t, "pkcs11:object=master?module-path=/m.so&pin-value=[redacted]", u.String())
	logger, logs := captureLogs()
	logger.Info("uri", "uri", u)
	for _, printed := range []string{fmt.Sprintf("%v %+v %#v %s", u, u, u, u), logs.String()} {
		require.NotContains(t, printed, "12 34")
		require.NotContains(t, printed, "12%2034")
	}
}

// TestParsePKCS11URIRefuses: every defect is ErrBadURI naming the attribute, never a value.
func TestParsePKCS11URIRefuses(t *testing.T) {
	t.Parallel()
	const q = "?module-path=/m.so&pin-value=s3cr3t"
	for _, c := range []struct{ uri, want string }{
		{"file:/x", "starting"},
		{"pkcs11:token=t" + q, "object"},
		{"pkcs11:object=m?pin-value=s3cr3t", "module-path"},
		{"pkcs11:object=m?module-path=/m.so", "pin-source or pin-value"},
		{"pkcs11:object=m?module-path=/m.so&pin-value=s3cr3t&pin-source=/p", "exclude"},
		{"pkcs11:object=m?module-path=lib.so&pin-value=s3cr3t", "absolute"},
		{"pkcs11:object=m;foo=bar" + q, `"foo" is not supported`},
		{"pkcs11:object=m;library-version=1" + q, `"library-version" is not supported`},
		{"pkcs11:object=m?module-name=softhsm2&pin-value=s3cr3t", `"module-name" is not supported`},
		{"pkcs11:object=m;object=n" + q, "twice"},
		{"pkcs11:object=m%zz" + q, "percent-encoding"},
		{"pkcs11:object=m;type=private-key" + q, "secret-key"},
		{"pkcs11:object=m;slot-id=one" + q, "slot-id"},
		{"pkcs11:object=m;id=" + q, "id is empty"},
		{"pkcs11:object=m" + q + "#frag", "fragment"},
		{"pkcs11:object=m?module-path=/m.so&pin-source=pin.txt", "absolute path"},
		{"pkcs11:object=m?module-path=/m.so&pin-source=file://host/pin", "local file"},
		{"pkcs11:object=m?module-path=/m.so&pin-value=", "pin-value is empty"},
		{"pkcs11:object=m?module-path=/m.so&pin-values3cr3t", "(not shown)"},
		{"pkcs11:object=m;s3cr3t" + q, "(not shown)"},
	} {
		_, err := masterkey.ParsePKCS11URI(c.uri)
		require.ErrorIs(t, err, masterkey.ErrBadURI, c.uri)
		require.ErrorContains(t, err, c.want, c.uri)
		require.NotContains(t, err.Error(), "s3cr3t", c.uri)
	}
}

// TestRedact: what may name the master key in a log line.
func TestRedact(t *testing.T) {
	t.Parallel()
	require.Equal(t, "file:", masterkey.Redact("file:"))
	require.Equal(t, "file:/etc/loopze/loopze.key", masterkey.Redact("file:/etc/loopze/loopze.key"))
	require.Equal(t, exampleURI, masterkey.Redact(exampleURI))
	require.Equal(t, "pkcs11:object=m?module-path=/m.so&pin-value=[redacted]", masterkey.Redact("pkcs11:object=m?module-path=/m.so&pin-value=s3cr3t"))
	require.Equal(t, "pkcs11:(malformed)", masterkey.Redact("pkcs11:object=m?pin-value=s3cr3t"))
	require.Equal(t, "vault:(redacted)", masterkey.Redact("vault://s3cr3t@x"))
	require.Equal(t, "(not a URI)", masterkey.Redact("s3cr3t"))
}

// FuzzParsePKCS11URI: no input panics the parser, and neither its error nor the URI it
// prints carries the pin-value it was given.
func FuzzParsePKCS11URI(f *testing.F) {
	f.Add(exampleURI)
	f.Add("pkcs11:object=m;id=%01?module-path=/m.so&pin-value=20250917")
	f.Add("pkcs11:object=m?module-path=/m.so&pin-value20250917")
	f.Add("pkcs11:;;;object=%?&&pin-value=20250917")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := masterkey.ParsePKCS11URI(raw)
		var printed string
		if err != nil {
			printed = err.Error()
		} else {
			printed = u.String() + fmt.Sprint(u)
		}
		printed += masterkey.Redact(raw)
		_, after, ok := strings.Cut(raw, "pin-value")
		if !ok {
			return
		}
		pin, _, _ := strings.Cut(strings.TrimPrefix(after, "="), "&")
		// A PIN of six digits or more, given once, cannot honestly appear in a message
		// (none of the parser's has such a number); a shorter one or one spelled elsewhere
		// in the URI may.
		if len(pin) >= 6 && strings.Trim(pin, "0123456789") == "" && strings.Count(raw, pin) == 1 {
			require.NotContains(t, printed, pin)
		}
	})
}
