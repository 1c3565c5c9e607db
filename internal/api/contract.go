package api

import (
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
)

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
