package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/secret"
)

// CertEncodings are the ways to hand over material besides PEM, shared by the create, update
// and validate bodies. Passphrases are write-only: used once to decrypt, never stored or
// returned.
type CertEncodings struct {
	CertDER        *string `json:"certDer,omitempty" maxLength:"400000" doc:"Inline: base64 of DER certificates (one, or several concatenated), instead of certPem"`
	KeyDER         *string `json:"keyDer,omitempty" maxLength:"400000" doc:"Inline pairs: base64 of the DER private key (PKCS#1, PKCS#8, SEC1, or encrypted PKCS#8 with keyPassphrase), instead of keyPem"`
	PKCS12         *string `json:"pkcs12,omitempty" maxLength:"400000" doc:"Inline pairs: base64 of a PKCS#12 / PFX file (modern AES or legacy RC2/3DES) holding the certificate, its chain and the key, with passphrase; replaces certPem and keyPem"`
	Passphrase     *string `json:"passphrase,omitempty" maxLength:"1024" writeOnly:"true" doc:"The passphrase of pkcs12. Used once to decrypt; never stored, logged or returned"`
	KeyPassphrase  *string `json:"keyPassphrase,omitempty" maxLength:"1024" writeOnly:"true" doc:"The passphrase of an encrypted keyPem (ENCRYPTED PRIVATE KEY, PBES2 with PBKDF2 or scrypt; or OpenSSL's legacy Proc-Type: 4,ENCRYPTED) or keyDer. Used once; never stored"`
	PassphraseFile *string `json:"passphraseFile,omitempty" maxLength:"4096" doc:"File source: absolute path of a file whose first line is the passphrase of a PKCS#12 certPath or an encrypted keyPath; read with them at every connection init" example:"/etc/loopze/certs/edge.pass"`
	VerifyWith     *string `json:"verifyWith,omitempty" maxLength:"64" doc:"Pairs: the ID of a ca-bundle of this tenant; the answer says whether the leaf chains to it. Not stored" example:"internal-root-ca"`
}

// decodeBase64 reads a base64 field the way people paste it: standard or URL alphabet,
// padded or not, with line breaks.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// apply puts the encodings into in, or returns a 422 naming each field that is not base64.
func (c *CertEncodings) apply(in *catalog.Input) error {
	var details []*ErrorDetail
	for _, f := range []struct {
		name string
		v    *string
		dst  *secret.Bytes
	}{{"certDer", c.CertDER, &in.CertDER}, {"keyDer", c.KeyDER, &in.KeyDER}, {"pkcs12", c.PKCS12, &in.PKCS12}} {
		if f.v == nil || *f.v == "" {
			continue
		}
		b, err := decodeBase64(*f.v)
		if err != nil {
			details = append(details, &ErrorDetail{Location: "body." + f.name, Message: "is not base64 (standard or URL alphabet, padding and line breaks allowed)"})
			continue
		}
		*f.dst = b
	}
	if len(details) > 0 {
		return newError(http.StatusUnprocessableEntity, "the entry is not valid", details...)
	}
	if c.Passphrase != nil {
		in.Passphrase = secret.String(*c.Passphrase)
	}
	if c.KeyPassphrase != nil {
		in.KeyPassphrase = secret.String(*c.KeyPassphrase)
	}
	in.PassphrasePath = c.PassphraseFile
	if c.VerifyWith != nil {
		in.VerifyWith = *c.VerifyWith
	}
	return nil
}

// VerificationOut says whether a pair's leaf chains to a ca-bundle.
type VerificationOut struct {
	CABundle string   `json:"caBundle" doc:"The ca-bundle checked against (verifyWith)" example:"internal-root-ca"`
	Chains   bool     `json:"chains" doc:"Whether the leaf chains to a certificate of the bundle, through the pair's own chain"`
	Path     []string `json:"path,omitempty" doc:"When it chains: the subjects from the leaf to the bundle's CA" example:"[\"CN=edge\",\"CN=Issuing CA\",\"CN=Root CA\"]"`
	Reason   string   `json:"reason,omitempty" enum:"unknown-authority,expired,name-constraints,not-authorized-to-sign,other" doc:"When it does not chain: why"`
	Message  string   `json:"message,omitempty" doc:"When it does not chain: the explanation" example:"unknown authority: no certificate of the bundle issued CN=Issuing CA"`
}

func toVerification(v *catalog.Verification) *VerificationOut {
	if v == nil {
		return nil
	}
	return &VerificationOut{CABundle: v.CABundle, Chains: v.Chains, Path: v.Path, Reason: v.Reason, Message: v.Message}
}

// Content types of the certificate export.
const (
	pemChainType = "application/pem-certificate-chain"
	derCertType  = "application/pkix-cert"
)

// CertificateOutput is an entry's public certificate chain.
type CertificateOutput struct {
	ContentType        string `header:"Content-Type"`
	ContentDisposition string `header:"Content-Disposition"`
	Body               []byte
}

// negotiateCertificate picks PEM (the default) or DER from an Accept header; "" means
// nothing acceptable.
func negotiateCertificate(accept string) string {
	if strings.TrimSpace(accept) == "" {
		return pemChainType
	}
	best, bestQ := "", -1.0
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		var t string
		switch mt {
		case pemChainType, "application/x-pem-file", "application/x-x509-ca-cert+pem", "text/plain", "*/*", "application/*":
			t = pemChainType
		case derCertType, "application/x-x509-ca-cert", "application/x-x509-user-cert", "application/pkix-cert+der":
			t = derCertType
		default:
			continue
		}
		if q > bestQ && q > 0 {
			best, bestQ = t, q
		}
	}
	return best
}

func registerCertificateExport(api huma.API, s *Server, tags []string) {
	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "getCertCertificate", Method: http.MethodGet, Path: certsPath + "/{id}/certificate", Tags: tags,
		Summary: "Download an entry's public certificate chain",
		Description: "The certificates only, never the key: to hand the chain to a peer. " +
			"Accept " + pemChainType + " (the default) returns every certificate as PEM, leaf first; " +
			"Accept " + derCertType + " returns the leaf certificate as DER (DER holds one certificate). " +
			"File-sourced entries are read from disk now. Editors and admins only.",
		Errors: []int{http.StatusNotFound, http.StatusNotAcceptable, http.StatusConflict},
		Responses: map[string]*huma.Response{"200": {Description: "The certificate chain", Content: map[string]*huma.MediaType{
			pemChainType: {Schema: &huma.Schema{Type: "string"}},
			derCertType:  {Schema: &huma.Schema{Type: "string", Format: "binary"}},
		}}},
	}), auth.Editor), func(ctx context.Context, in *struct {
		EntryIDParam
		Accept string `header:"Accept" maxLength:"1024" doc:"application/pem-certificate-chain (default) or application/pkix-cert"`
	}) (*CertificateOutput, error) {
		ct := negotiateCertificate(in.Accept)
		if ct == "" {
			return nil, newError(http.StatusNotAcceptable, "the certificate is available as "+pemChainType+" or "+derCertType)
		}
		_, m, err := s.deps.Catalog.Material(ctx, principalFrom(ctx).Tenant, in.ID)
		if errors.Is(err, catalog.ErrMaterialUnavailable) {
			s.deps.Logger.Warn("certificate export: material not loadable", "request_id", RequestID(ctx), "entry", in.ID, "err", err)
			return nil, newError(http.StatusConflict, "the entry's material cannot be loaded now (for a file entry: its files are missing or do not parse); see GET /api/v1/flows/{flowId}/nodes/{nodeId}/tls or the server log")
		}
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &CertificateOutput{ContentType: ct}
		if ct == derCertType {
			out.Body = m.Certs[0].Raw
			out.ContentDisposition = `attachment; filename="` + in.ID + `.der"`
			return out, nil
		}
		var buf bytes.Buffer
		for _, c := range m.Certs {
			_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		out.Body = buf.Bytes()
		out.ContentDisposition = `attachment; filename="` + in.ID + `.pem"`
		return out, nil
	})
}
