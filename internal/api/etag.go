package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/repo"
)

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// parseIfMatch reads an If-Match header into the version the caller last saw: 0 when there
// is no condition ("" or "*"), repo.IfAbsent for "0" (this API's tag of a workspace never
// deployed), the version otherwise. A header that is not a list of entity tags is a 400; a
// well-formed tag this API never issues can match nothing stored, so it is a 412, as RFC
// 9110 has it for an If-Match that does not match.
func parseIfMatch(h string) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return 0, nil
	}
	tags, ok := parseETags(h)
	if !ok {
		return 0, newError(http.StatusBadRequest, `If-Match must be an entity tag, like "3"`,
			&ErrorDetail{Location: "header.If-Match", Message: "not an entity tag"})
	}
	var ours []int64
	for _, t := range tags {
		if v, ok := ourVersion(t); ok {
			ours = append(ours, v)
		}
	}
	switch len(ours) {
	case 0:
		return 0, newError(http.StatusPreconditionFailed, "If-Match names no version of this resource; GET it again for its ETag")
	case 1:
		if ours[0] == 0 {
			return repo.IfAbsent, nil
		}
		return ours[0], nil
	}
	return 0, newError(http.StatusBadRequest, "If-Match may name one version of this API only",
		&ErrorDetail{Location: "header.If-Match", Message: "more than one ETag of this API"})
}

// ourVersion reads a tag this API issues: a strong tag of decimal digits.
func ourVersion(tag string) (int64, bool) {
	if strings.HasPrefix(tag, "W/") || len(tag) < 3 {
		return 0, false
	}
	digits := tag[1 : len(tag)-1]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || (v == 0 && digits != "0") {
		return 0, false
	}
	return v, true
}

// parseETags splits a comma-separated list of entity tags (RFC 9110 8.8.3), each kept with
// its quotes and weak prefix.
func parseETags(h string) ([]string, bool) {
	var tags []string
	for i := 0; i < len(h); {
		switch h[i] {
		case ' ', '\t', ',':
			i++
			continue
		}
		start := i
		if strings.HasPrefix(h[i:], "W/") {
			i += 2
		}
		if i >= len(h) || h[i] != '"' {
			return nil, false
		}
		end := strings.IndexByte(h[i+1:], '"')
		if end < 0 {
			return nil, false
		}
		opaque := h[i+1 : i+1+end]
		for j := 0; j < len(opaque); j++ {
			if c := opaque[j]; c < 0x21 || c == 0x7f {
				return nil, false
			}
		}
		i += end + 2
		tags = append(tags, h[start:i])
		if i < len(h) && h[i] != ',' && h[i] != ' ' && h[i] != '\t' {
			return nil, false
		}
	}
	return tags, len(tags) > 0
}

// entryPrecondition reads the conditional headers of a write to an entry (RFC 9110 13.1):
// If-Match with the entry's ETag, or "*" for "it exists"; If-None-Match "*" for "it does
// not exist" (a create only), or ETags the entry must not be at. Entries start at version
// 1, so the tag "0" matches no entry. A condition that does not hold is a 412 from the
// catalogue; a header that is not a list of entity tags is a 400.
func entryPrecondition(ifMatch, ifNoneMatch string) (catalog.Precondition, error) {
	var pre catalog.Precondition
	if strings.TrimSpace(ifMatch) == "*" {
		pre.Exists = true
	} else {
		v, err := parseIfMatch(ifMatch)
		if err != nil {
			return pre, err
		}
		if v == repo.IfAbsent {
			return pre, newError(http.StatusPreconditionFailed, "If-Match names no version of this entry; GET it again for its ETag")
		}
		pre.Version = v
	}
	switch h := strings.TrimSpace(ifNoneMatch); h {
	case "":
	case "*":
		pre.Absent = true
	default:
		tags, ok := parseETags(h)
		if !ok {
			return pre, newError(http.StatusBadRequest, `If-None-Match must be "*" or entity tags, like "3"`,
				&ErrorDetail{Location: "header.If-None-Match", Message: "not an entity tag"})
		}
		for _, t := range tags {
			// If-None-Match compares weakly (RFC 9110 13.1.2).
			if v, ok := ourVersion(strings.TrimPrefix(t, "W/")); ok && v > 0 {
				pre.NotVersions = append(pre.NotVersions, v)
			}
		}
	}
	return pre, nil
}

// notModified answers a conditional GET: a 304 carrying the current ETag when the
// If-None-Match header names it (or is "*"), nil otherwise. If-None-Match compares weakly,
// so W/"3" matches "3" too (RFC 9110 13.1.2).
func notModified(ifNoneMatch, current string) error {
	h := strings.TrimSpace(ifNoneMatch)
	if h == "" {
		return nil
	}
	match := h == "*"
	if tags, ok := parseETags(h); ok {
		for _, t := range tags {
			if strings.TrimPrefix(t, "W/") == current {
				match = true
			}
		}
	}
	if !match {
		return nil
	}
	return huma.ErrorWithHeaders(newError(http.StatusNotModified, "not modified"), http.Header{"ETag": {current}})
}

// declareNotModified documents the 304 of a conditional GET on op.
func declareNotModified(op *huma.Operation) {
	if op == nil {
		return
	}
	op.Responses["304"] = &huma.Response{
		Description: "Not Modified: the If-None-Match header names the current version",
		Headers: map[string]*huma.Param{"ETag": {Description: "The current version",
			Schema: &huma.Schema{Type: huma.TypeString, MaxLength: ptr(maxHeaderLen)}}},
	}
}
