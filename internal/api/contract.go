package api

import (
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
)

// describeDocument fills in what the document says of itself: where the API is served,
// who answers for it, and what each tag groups.
func describeDocument(o *huma.OpenAPI) {
	o.Info.Contact = &huma.Contact{Name: "LOOPZE certificate store maintainers"}
	o.Servers = []*huma.Server{{URL: "/",
		Description: "The server that serves this document: production or local (make run: http://127.0.0.1:8080)",
		// Operators and flow nodes on the plant network call it, not the public.
		Extensions: map[string]any{"x-internal": true}}}
	o.Tags = []*huma.Tag{
		{Name: "certificates", Description: "The tenant's catalogue of CA bundles, client pairs and server pairs"},
		{Name: "flows", Description: "The tenant's deployed workspace and what its nodes' TLS resolves to"},
		{Name: "health", Description: "Liveness and readiness probes, open to anyone"},
	}
}

// declareCommon documents the answers every operation of a kind can give, whoever
// registered it: 415 where there is a request body (Huma refuses another media type), the
// rate limit's headers and 429 where a token is required. It runs after every route is
// registered.
func declareCommon(api huma.API) {
	for _, item := range api.OpenAPI().Paths {
		for _, op := range []*huma.Operation{item.Get, item.Put, item.Post, item.Delete, item.Patch} {
			if op == nil {
				continue
			}
			if op.RequestBody != nil {
				declareError(api, op, http.StatusUnsupportedMediaType, nil)
			}
			if len(op.Security) > 0 {
				declareRateLimit(api, op)
			}
			boundResponseHeaders(op)
		}
	}
}

// declareError adds an error response in the API's error shape to op, with headers.
func declareError(api huma.API, op *huma.Operation, code int, headers map[string]*huma.Param) {
	key := strconv.Itoa(code)
	if op.Responses == nil {
		op.Responses = map[string]*huma.Response{}
	}
	if _, ok := op.Responses[key]; ok {
		return
	}
	op.Responses[key] = &huma.Response{
		Description: http.StatusText(code),
		Headers:     headers,
		Content: map[string]*huma.MediaType{"application/json": {
			Schema: &huma.Schema{Ref: "#/components/schemas/ErrorBody"}}},
	}
}

// maxHeaderLen bounds the response headers the server writes (ETag, Location, RateLimit and
// the like are all far shorter).
const maxHeaderLen = 1024

// boundResponseHeaders gives every string response header of op its bound.
func boundResponseHeaders(op *huma.Operation) {
	for _, r := range op.Responses {
		for _, h := range r.Headers {
			if h.Schema != nil && h.Schema.Type == huma.TypeString && h.Schema.MaxLength == nil {
				h.Schema.MaxLength = ptr(maxHeaderLen)
			}
		}
	}
}
