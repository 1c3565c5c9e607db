package apitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	vErrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// The committed OpenAPI document, parsed once per test binary.
var (
	contractOnce sync.Once
	contractErr  error
	contractDoc  *v3.Document
	contractVal  validator.Validator
	contractMu   sync.Mutex // the validator's caches are not shared across goroutines
)

// specFile finds openapi/openapi.yaml beside the module's go.mod, from the test's directory.
func specFile() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the OpenAPI document: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "openapi", "openapi.yaml"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find the OpenAPI document: no go.mod above the working directory")
		}
		dir = parent
	}
}

func loadContract() error {
	contractOnce.Do(func() {
		path, err := specFile()
		if err != nil {
			contractErr = err
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			contractErr = fmt.Errorf("read the OpenAPI document: %w", err)
			return
		}
		doc, err := libopenapi.NewDocument(b)
		if err != nil {
			contractErr = fmt.Errorf("parse %s: %w", path, err)
			return
		}
		model, err := doc.BuildV3Model()
		if err != nil {
			contractErr = fmt.Errorf("build the model of %s: %w", path, err)
			return
		}
		contractDoc = &model.Model
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			contractErr = fmt.Errorf("build the validator of %s: %v", path, errs)
			return
		}
		contractVal = v
	})
	return contractErr
}

// Contract wraps h so that every request it serves and every answer it gives is checked
// against the committed openapi/openapi.yaml; a mismatch fails t. What is checked:
//   - a request to a documented path and method: its answer's status must be declared, and
//     its headers, content type and body must match the declared response. The request must
//     match the document too unless the server refused it (4xx): a request the document
//     forbids but the server accepts means the two disagree;
//   - a request under /api/ that matches no documented operation must be answered 404 or
//     405 in the API's error shape;
//   - everything else (web pages, static files, /metrics) is not part of the document.
func Contract(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	if err := loadContract(); err != nil {
		t.Fatalf("contract: %v", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody []byte
		if r.Body != nil {
			reqBody, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		if problems := checkContract(r, reqBody, rec); len(problems) > 0 {
			t.Errorf("contract: %s %s answered %d, which the OpenAPI document does not allow:\n  %s\nbody: %.600s",
				r.Method, r.URL.RequestURI(), rec.code, strings.Join(problems, "\n  "), rec.body.String())
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		_, _ = w.Write(rec.body.Bytes())
	})
}

func checkContract(r *http.Request, reqBody []byte, rec *recorder) []string {
	if r.Method == http.MethodHead || r.Method == http.MethodOptions {
		return nil
	}
	check := r.Clone(r.Context())
	check.Body = io.NopCloser(bytes.NewReader(reqBody))
	item, _, _ := paths.FindPath(check, contractDoc, nil)
	var op *v3.Operation
	if item != nil {
		op = helpers.ExtractOperation(check, item)
	}
	if op == nil {
		if !strings.HasPrefix(r.URL.Path, "/api/") && item == nil {
			return nil
		}
		if rec.code != http.StatusNotFound && rec.code != http.StatusMethodNotAllowed {
			return []string{"no documented operation for this path and method"}
		}
		var e struct {
			Error   *string `json:"error"`
			Message *string `json:"message"`
		}
		if !strings.HasPrefix(rec.header.Get("Content-Type"), "application/json") ||
			json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Error == nil || e.Message == nil {
			return []string{"an unrouted request must be answered in the API's JSON error shape"}
		}
		return nil
	}
	resp := &http.Response{StatusCode: rec.code, Header: rec.header, Request: check,
		Body: io.NopCloser(bytes.NewReader(rec.body.Bytes()))}
	contractMu.Lock()
	defer contractMu.Unlock()
	var problems []string
	if _, errs := contractVal.ValidateHttpResponse(check, resp); len(errs) > 0 {
		for _, e := range errs {
			problems = append(problems, "response: "+describe(e.Message, e.Reason, schemaReasons(e)))
		}
	}
	if rec.code < 400 || rec.code >= 500 {
		check.Body = io.NopCloser(bytes.NewReader(reqBody))
		if _, errs := contractVal.ValidateHttpRequestSync(check); len(errs) > 0 {
			for _, e := range errs {
				problems = append(problems, "request (accepted by the server): "+describe(e.Message, e.Reason, schemaReasons(e)))
			}
		}
	}
	return problems
}

func describe(msg, reason string, details []string) string {
	s := msg
	if reason != "" && reason != msg {
		s += ": " + reason
	}
	if len(details) > 0 {
		s += " [" + strings.Join(details, "; ") + "]"
	}
	return s
}

// schemaReasons lists where a body failed its schema, without the offending value.
func schemaReasons(e *vErrors.ValidationError) []string {
	var out []string
	for _, f := range e.SchemaValidationErrors {
		out = append(out, f.FieldPath+": "+f.Reason+" ("+f.KeywordLocation+")")
	}
	return out
}

// recorder holds the whole answer until it has been checked.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
