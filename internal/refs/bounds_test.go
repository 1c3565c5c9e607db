package refs

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecimalLen(t *testing.T) {
	t.Parallel()
	for lit, want := range map[string]int{
		"0": 1, "-0": 1, "0.0": 1, "7": 1, "-12": 2, "100": 3, "1.5": 3, "123.45e2": 5,
		"0.001": 5, "1e300": 301, "1e-300": 302, "12e-1": 3, "1E3": 4, "0.5e1": 1,
		"1e131071": 131072, "1e99999999999999999999": MaxNumberDigits + 1_000_000,
	} {
		require.Equal(t, want, decimalLen(lit), lit)
	}
}

// node wraps a node's JSON properties into a whole workspace.
func node(props string) string {
	return `{"flows":[{"id":"f","label":"Line","nodes":[{"id":"n","type":"tcp-out"` + props + `}]}]}`
}

func TestScanRefuses(t *testing.T) {
	t.Parallel()
	const pem = `-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----END PRIVATE KEY-----`
	cases := []struct{ doc, path, msg string }{
		// Numbers that expand when stored, or that no JSON reader holds.
		{node(`,"x":1e131071`), "flows[0].nodes[0].x", "64-bit float"},
		{node(`,"x":[1,2,1e300]`), "flows[0].nodes[0].x[2]", "301 digits"},
		{node(`,"x":{"y":1e-300}`), "flows[0].nodes[0].x.y", "302 digits"},
		{node(`,"x":12345678901234567890123456789012345678901`), "flows[0].nodes[0].x", "41 digits"},
		// PEM armour outside the sealed fields, however it is written.
		{`{"flows":[{"id":"f","label":"` + pem + `","nodes":[]}]}`, "flows[0].label", "PEM"},
		{node(`,"privateKey":"` + pem + `"`), "flows[0].nodes[0].privateKey", "PEM"},
		{node(`,"name":"` + pem + `"`), "flows[0].nodes[0].name", "PEM"},
		{node(`,"config":{"deep":["` + pem + `"]}`), "flows[0].nodes[0].config.deep[0]", "PEM"},
		{node(`,"x":"\u002d\u002d\u002d\u002d\u002dBEGIN CERTIFICATE-----"`), "flows[0].nodes[0].x", "PEM"},
		{node(`,"` + pem + `":1`), "flows[0].nodes[0]." + strings.ReplaceAll(pem, `\n`, "\n"), "PEM"},
		{node(`,"tls":{"serverName":"` + pem + `"}`), "flows[0].nodes[0].tls.serverName", "PEM"},
		{node(`,"tls":{"clientKeyPem":{"x":"` + pem + `"}}`), "flows[0].nodes[0].tls.clientKeyPem.x", "PEM"},
		// Unknown tls properties, case variants named.
		{node(`,"tls":{"clientKeyPEM":"` + pem + `"}`), "flows[0].nodes[0].tls.clientKeyPEM", "PEM"},
		{node(`,"tls":{"clientKeyPEM":"x"}`), "flows[0].nodes[0].tls.clientKeyPEM", "did you mean clientKeyPem?"},
		{node(`,"tls":{"CABUNDLEREF":"x"}`), "flows[0].nodes[0].tls.CABUNDLEREF", "did you mean caBundleRef?"},
		{node(`,"tls":{"password":"x"}`), "flows[0].nodes[0].tls.password", "is not a tls property"},
		// Structure.
		{node(`,"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)), "flows[0].nodes[0].x" + strings.Repeat("[0]", MaxDepth-5), "nests deeper than 32"},
		{node(`,"id":"m"`), "flows[0].nodes[0].id", "given twice"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.doc))
		var fe *FieldError
		require.ErrorAs(t, err, &fe, c.doc)
		require.True(t, errors.Is(err, ErrRefused), c.doc)
		require.Equal(t, c.path, fe.Path, c.doc)
		require.Contains(t, fe.Message, c.msg, c.doc)
		require.NotContains(t, fe.Message, "MC4CAQAw")
	}
}

func TestScanAccepts(t *testing.T) {
	t.Parallel()
	const pem = `-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----END PRIVATE KEY-----`
	for _, doc := range []string{
		node(`,"x":1.7976931348623157,"y":-12.5e-3,"z":[0,1e39,123456789012345678901234567890]`),
		node(`,"tls":{"clientCertPem":"` + pem + `","clientKeyPem":"` + pem + `","caBundlePem":"` + pem + `","alpnProtocol":"h2"}`),
		node(`,"credentials":{"key":"` + pem + `"}`),
		node(`,"note":"BEGIN without the armour, and ----- dashes"`),
		node(`,"x":` + strings.Repeat("[", MaxDepth-5) + strings.Repeat("]", MaxDepth-5)),
	} {
		_, err := Parse([]byte(doc))
		require.NoError(t, err, doc)
	}
}

func TestParseCounts(t *testing.T) {
	t.Parallel()
	props := make([]string, MaxNodeProperties-1)
	for i := range props {
		props[i] = fmt.Sprintf(`"p%d":1`, i)
	}
	_, err := Parse([]byte(node("," + strings.Join(props[:MaxNodeProperties-2], ","))))
	require.NoError(t, err)
	_, err = Parse([]byte(node("," + strings.Join(props, ","))))
	require.ErrorIs(t, err, ErrRefused)
	require.Contains(t, err.Error(), "at most 200")

	flows := strings.Repeat(`{"id":"f","nodes":[]},`, MaxFlows)
	_, err = Parse([]byte(`{"flows":[` + flows + `{"id":"g","nodes":[]}]}`))
	require.ErrorIs(t, err, ErrRefused)

	nodes := strings.Repeat(`{"id":"n","type":"t"},`, MaxNodes/2)
	half := `{"id":"f","nodes":[` + strings.TrimSuffix(nodes, ",") + `]}`
	_, err = Parse([]byte(`{"flows":[` + half + `,` + half + `]}`))
	require.NoError(t, err, "the node IDs repeat, but counting comes first and ID rules later")
	_, err = Parse([]byte(`{"flows":[` + half + `,` + half + `,{"id":"g","nodes":[{"id":"x"}]}]}`))
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "flows[2].nodes", fe.Path)

	_, err = Parse(make([]byte, MaxBytes+1))
	require.ErrorIs(t, err, ErrRefused)
}
