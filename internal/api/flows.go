package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/refs"
)

const flowsPath = "/api/v1/flows"

// MaxWorkspaceBytes bounds a deployed workspace document.
const MaxWorkspaceBytes = refs.MaxBytes

// The types below document the workspace document in the OpenAPI file; the handlers read
// and write it through internal/refs, which keeps every property they do not list.

// Workspace is a tenant's whole workspace, as deployed.
type Workspace struct {
	Flows []Flow `json:"flows" maxItems:"2000" doc:"Every flow of the tenant. Flow IDs are unique and non-empty."`
}

// Flow is one flow (an editor tab).
type Flow struct {
	_     struct{}   `additionalProperties:"true"`
	ID    string     `json:"id" maxLength:"200" doc:"Unique among flows, non-empty" example:"ingest-line-1"`
	Label string     `json:"label,omitempty" example:"Ingest line 1"`
	Nodes []FlowNode `json:"nodes" maxItems:"20000" doc:"The flow's nodes. Any other property of the flow is kept as sent."`
}

// FlowNode is one node. Properties not listed here are kept as sent.
type FlowNode struct {
	_              struct{}       `additionalProperties:"true"`
	ID             string         `json:"id" maxLength:"200" doc:"Unique across the whole workspace, non-empty" example:"tcp-out-3"`
	Type           string         `json:"type" doc:"The node type" example:"tcp-out"`
	Name           string         `json:"name,omitempty"`
	TLS            *TLSBlock      `json:"tls,omitempty" doc:"Where the node's TLS material comes from"`
	Credentials    map[string]any `json:"credentials,omitempty" doc:"Write-only secrets of the node, sealed at rest and never returned. In a deploy each value is a string (sets it), \"\" or null (clears it) or {\"set\": true} (keeps the stored value); a key left out, or the whole object left out, keeps the stored value. Reads show {\"set\": true} for every stored key. A node removed from the workspace loses its credentials."`
	CertRef        string         `json:"certRef,omitempty" doc:"opcua-server nodes: the client-pair entry the node presents" example:"opcua-plc-1"`
	ClientCertFile string         `json:"clientCertFile,omitempty" doc:"opcua-server nodes, deprecated: a certificate path. Still accepted as a direct file, with a WARN naming the node; the OPC UA migration turns it into a certRef."`
	ClientKeyFile  string         `json:"clientKeyFile,omitempty" doc:"opcua-server nodes, deprecated: the key path beside clientCertFile."`
}

// TLSBlock is a node's tls block. Each part (caBundle, clientCert, serverCert) comes from
// exactly one of a store reference, direct files or inline PEM.
type TLSBlock struct {
	_              struct{} `additionalProperties:"false"`
	ServerName     string   `json:"serverName,omitempty" doc:"Server name to verify (and send as SNI), when it differs from the host dialled"`
	ALPNProtocol   string   `json:"alpnProtocol,omitempty" doc:"Kept as sent, for the runtime"`
	CABundleRef    string   `json:"caBundleRef,omitempty" doc:"ID of a ca-bundle entry" example:"internal-root-ca"`
	CABundleFile   string   `json:"caBundleFile,omitempty" doc:"Absolute path of a PEM CA bundle, read at every connection init"`
	CABundlePem    any      `json:"caBundlePem,omitempty" doc:"Inline PEM (write-only): a string sets it, {\"set\": true} keeps the stored value, leaving the field out removes it. Reads show {\"set\": true}."`
	ClientCertRef  string   `json:"clientCertRef,omitempty" doc:"ID of a client-pair entry" example:"edge-client-2026"`
	ClientCertFile string   `json:"clientCertFile,omitempty" doc:"Absolute path of the client certificate (with clientKeyFile)"`
	ClientKeyFile  string   `json:"clientKeyFile,omitempty" doc:"Absolute path of the client key (with clientCertFile)"`
	ClientCertPem  any      `json:"clientCertPem,omitempty" doc:"Inline PEM (write-only), as caBundlePem"`
	ClientKeyPem   any      `json:"clientKeyPem,omitempty" doc:"Inline PEM private key (write-only), as caBundlePem"`
	ServerCertRef  string   `json:"serverCertRef,omitempty" doc:"ID of a server-pair entry"`
	ServerCertFile string   `json:"serverCertFile,omitempty" doc:"Absolute path of the server certificate (with serverKeyFile)"`
	ServerKeyFile  string   `json:"serverKeyFile,omitempty" doc:"Absolute path of the server key (with serverCertFile)"`
	ServerCertPem  any      `json:"serverCertPem,omitempty" doc:"Inline PEM (write-only), as caBundlePem"`
	ServerKeyPem   any      `json:"serverKeyPem,omitempty" doc:"Inline PEM private key (write-only), as caBundlePem"`
}

// WorkspaceOutput is the saved workspace, streamed by internal/workspace.
type WorkspaceOutput struct {
	ETag        string `header:"ETag" doc:"The workspace version; send it as If-Match to deploy only over what you read"`
	ContentType string `header:"Content-Type"`
	Body        func(huma.Context)
}

// DeployProblem is a warning of a deploy, located like an error detail.
type DeployProblem struct {
	Location string `json:"location" example:"body.flows[0].nodes[2].tls.caBundleFile"`
	FlowID   string `json:"flowId" example:"ingest-line-1"`
	NodeID   string `json:"nodeId,omitempty" example:"tcp-out-3"`
	NodeType string `json:"nodeType,omitempty" example:"tcp-out"`
	Field    string `json:"field,omitempty" example:"tls.caBundleFile"`
	Message  string `json:"message"`
}

// DeployOutput is the answer to a deploy.
type DeployOutput struct {
	ETag string `header:"ETag"`
	Body struct {
		Version    int64           `json:"version" doc:"The saved workspace's version; it is also the ETag"`
		References int             `json:"references" doc:"How many node fields reference store entries"`
		UpdatedAt  time.Time       `json:"updatedAt"`
		Warnings   []DeployProblem `json:"warnings" doc:"Problems that did not stop the deploy: expired material, direct files not readable now, deprecated opcua-server properties"`
	}
}

// TLSPart is what one part of a node's TLS resolves to now. Never PEM.
type TLSPart struct {
	Part              string     `json:"part" enum:"caBundle,clientCert,serverCert"`
	Origin            string     `json:"origin" enum:"ref,file,inline"`
	Ref               string     `json:"ref,omitempty" doc:"The entry named, for origin ref" example:"edge-client-2026"`
	EntrySource       string     `json:"entrySource,omitempty" enum:"inline,file" doc:"The referenced entry's source"`
	CertPath          string     `json:"certPath,omitempty" doc:"The certificate file read, for origin file and file entries"`
	KeyPath           string     `json:"keyPath,omitempty"`
	FingerprintSHA256 string     `json:"fingerprintSha256,omitempty" doc:"Of the leaf certificate as read now"`
	Subject           string     `json:"subject,omitempty"`
	NotAfter          *time.Time `json:"notAfter,omitempty"`
	Warnings          []string   `json:"warnings" doc:"Expiry and other problems that do not stop a connection"`
	Error             string     `json:"error,omitempty" doc:"Why the part does not resolve now; connections would fail"`
}

// NodeTLSOutput is what a saved node's TLS resolves to now.
type NodeTLSOutput struct {
	Body struct {
		FlowID   string    `json:"flowId"`
		NodeID   string    `json:"nodeId"`
		NodeType string    `json:"nodeType"`
		Parts    []TLSPart `json:"parts" doc:"The configured parts, in the order caBundle, clientCert, serverCert"`
		// ClientChain is set for a node with a client pair and a CA bundle that resolve.
		ClientChain *ChainCheck `json:"clientChain,omitempty" doc:"For a node with a clientCert and a caBundle that both resolve: whether the client pair chains to the node's own CA bundle"`
	}
}

// ChainCheck says whether a node's client pair chains to its CA bundle.
type ChainCheck struct {
	Chains  bool     `json:"chains"`
	Path    []string `json:"path,omitempty" doc:"When it chains: the subjects from the leaf to the bundle's CA"`
	Reason  string   `json:"reason,omitempty" enum:"unknown-authority,expired,name-constraints,not-authorized-to-sign,other"`
	Message string   `json:"message,omitempty"`
}

func registerFlows(api huma.API, s *Server) {
	tags := []string{"flows"}
	wsSchema := api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[Workspace](), true, "Workspace")

	huma.Register(api, secured(huma.Operation{
		OperationID: "getFlows", Method: http.MethodGet, Path: flowsPath, Tags: tags,
		Summary: "Get the saved workspace",
		Description: "The tenant's deployed workspace, every node property as deployed. Credentials and inline PEM are never returned: " +
			"each stored value shows as {\"set\": true}, so the document deploys back unchanged. Before the first deploy: {\"flows\": []}, ETag \"0\".",
		Responses: map[string]*huma.Response{"200": {Description: "OK", Content: map[string]*huma.MediaType{
			"application/json": {Schema: wsSchema}}}},
	}, auth.Viewer), func(ctx context.Context, in *struct {
		IfNoneMatch string `header:"If-None-Match" maxLength:"1024" doc:"ETag of the workspace version the caller holds: 304 while it is current"`
	}) (*WorkspaceOutput, error) {
		doc, err := s.deps.Workspace.Document(ctx, principalFrom(ctx).Tenant)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		if err := notModified(in.IfNoneMatch, etag(doc.Version)); err != nil {
			return nil, err
		}
		log := s.deps.Logger
		return &WorkspaceOutput{ETag: etag(doc.Version), ContentType: "application/json", Body: func(hc huma.Context) {
			hc.SetStatus(http.StatusOK)
			if _, err := doc.WriteTo(hc.BodyWriter()); err != nil {
				// The status is out: all that is left is to cut the body short and say why.
				log.Error("write workspace", "request_id", RequestID(ctx), "error", err)
			}
		}}, nil
	})
	declareNotModified(api.OpenAPI().Paths[flowsPath].Get)

	huma.Register(api, secured(huma.Operation{
		OperationID: "deployFlows", Method: http.MethodPut, Path: flowsPath, Tags: tags,
		Summary: "Deploy the workspace",
		Description: "Replaces the tenant's whole workspace atomically. Every store reference is type-checked " +
			"(tls.caBundleRef a ca-bundle, tls.clientCertRef a client-pair, tls.serverCertRef a server-pair, an opcua-server node's certRef a client-pair); " +
			"a missing entry, a wrong type, two ways for one TLS part, a relative or out-of-roots path, inline PEM that does not parse, " +
			"empty or duplicate flow or node IDs are a 422 listing every problem with its flow, node and field, and nothing of the deploy is saved. " +
			fmt.Sprintf("Bounds, each a 422 naming the path: at most %d bytes, %d flows, %d nodes in all, %d properties per node, nesting %d levels deep; ",
				refs.MaxBytes, refs.MaxFlows, refs.MaxNodes, refs.MaxNodeProperties, refs.MaxDepth) +
			fmt.Sprintf("numbers must fit a 64-bit float and take at most %d digits in plain decimal; property names must be unique. ", refs.MaxNumberDigits) +
			"PEM armour (-----BEGIN) is refused everywhere but in node credentials and the tls block's *Pem fields, which are sealed; " +
			"a tls block takes only its part fields, serverName and alpnProtocol (names are case-sensitive). " +
			"References are stored with the workspace, so a referenced entry cannot be deleted (409). " +
			"Credentials and inline PEM are sealed at rest and never returned. Send If-Match with the ETag of GET to refuse a lost update (412).",
		MaxBodyBytes: MaxWorkspaceBytes,
		// internal/refs reads the document itself, keeping every property it does not know.
		SkipValidateBody: true,
		Errors:           []int{http.StatusBadRequest, http.StatusConflict, http.StatusPreconditionFailed, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity},
	}, auth.Editor), func(ctx context.Context, in *struct {
		IfMatch string `header:"If-Match" maxLength:"1024" doc:"ETag of the workspace version being replaced"`
		RawBody []byte `contentType:"application/json"`
	}) (*DeployOutput, error) {
		ifMatch, err := parseIfMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		ws, err := refs.Parse(in.RawBody)
		if err != nil {
			return nil, parseError(err)
		}
		res, err := s.deps.Workspace.Deploy(ctx, principalFrom(ctx).Tenant, ws, ifMatch)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &DeployOutput{ETag: etag(res.Version)}
		out.Body.Version, out.Body.References, out.Body.UpdatedAt = res.Version, res.References, res.UpdatedAt.UTC()
		out.Body.Warnings = make([]DeployProblem, 0, len(res.Warnings))
		for _, w := range res.Warnings {
			out.Body.Warnings = append(out.Body.Warnings, DeployProblem{Location: "body." + w.Path(), FlowID: w.FlowID,
				NodeID: w.NodeID, NodeType: w.NodeType, Field: w.Field, Message: w.Message})
		}
		return out, nil
	})
	// Huma documents a raw body as binary; the document is the workspace.
	if op := api.OpenAPI().Paths[flowsPath].Put; op != nil && op.RequestBody != nil {
		op.RequestBody.Description = "The whole workspace"
		op.RequestBody.Content["application/json"].Schema = wsSchema
	}

	huma.Register(api, secured(derives(huma.Operation{
		OperationID: "getNodeTLS", Method: http.MethodGet, Path: flowsPath + "/{flowId}/nodes/{nodeId}/tls", Tags: tags,
		Summary: "What a node's TLS resolves to now",
		Description: "Resolves the saved node's tls block (an opcua-server node's certRef counts as its clientCert part) the way a connection init would, now: " +
			"files are read afresh, so a rotation on disk shows at once. Per part: origin (ref, file, inline), ref or paths, the leaf's fingerprint, subject and notAfter, " +
			"warnings, and an error when the part would fail a connection; for a node with a clientCert and a caBundle, whether the client pair chains to that bundle (clientChain). Never PEM.",
		Errors: []int{http.StatusNotFound},
	}), auth.Viewer), func(ctx context.Context, in *struct {
		FlowID string `path:"flowId" maxLength:"200" example:"ingest-line-1"`
		NodeID string `path:"nodeId" maxLength:"200" example:"tcp-out-3"`
	}) (*NodeTLSOutput, error) {
		n, parts, chain, err := s.deps.Workspace.NodeTLSCheck(ctx, principalFrom(ctx).Tenant, in.FlowID, in.NodeID)
		if err != nil {
			return nil, s.mapError(ctx, err)
		}
		out := &NodeTLSOutput{}
		if chain != nil {
			out.Body.ClientChain = &ChainCheck{Chains: chain.Chains, Path: chain.Path, Reason: chain.Reason, Message: chain.Message}
		}
		out.Body.FlowID, out.Body.NodeID, out.Body.NodeType = in.FlowID, n.ID, n.Type
		out.Body.Parts = make([]TLSPart, 0, len(parts))
		for _, p := range parts {
			tp := TLSPart{Part: p.Part, Origin: p.Origin, Ref: p.Ref, EntrySource: p.EntrySource, CertPath: p.CertPath,
				KeyPath: p.KeyPath, FingerprintSHA256: p.FingerprintSHA256, Subject: p.Subject, Warnings: p.Warnings, Error: p.Error}
			if tp.Warnings == nil {
				tp.Warnings = []string{}
			}
			if !p.NotAfter.IsZero() {
				na := p.NotAfter
				tp.NotAfter = &na
			}
			out.Body.Parts = append(out.Body.Parts, tp)
		}
		return out, nil
	})
}

// parseError answers a workspace document that cannot be read: 400 for broken JSON, 422
// for a property of the wrong type.
func parseError(err error) error {
	var fe *refs.FieldError
	if !errors.As(err, &fe) {
		return newError(http.StatusBadRequest, "the body is not a workspace document")
	}
	refused := errors.Is(err, refs.ErrUnstorable) || errors.Is(err, refs.ErrRefused)
	if fe.Path == "body" && !refused {
		return newError(http.StatusBadRequest, "the body is not a workspace document",
			&ErrorDetail{Location: "body", Message: fe.Message})
	}
	loc := fe.Path
	if len(loc) < 4 || loc[:4] != "body" {
		loc = "body." + loc
	}
	return newError(http.StatusUnprocessableEntity, "the workspace is not valid", &ErrorDetail{Location: loc, Message: fe.Message})
}
