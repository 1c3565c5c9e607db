package api

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/repo"
)

// etag is this API's entity tag for a version: an entry's or the workspace's version, or
// the generation of a credentials file. It is the decimal number, quoted, which is what
// runtimes build from the generation in their copy of the file to ask for changes only.
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
	if strings.TrimSpace(ifNoneMatch) == "" {
		return pre, nil
	}
	m, ok := parseIfNoneMatch(ifNoneMatch)
	if !ok {
		return pre, newError(http.StatusBadRequest, `If-None-Match must be "*" or entity tags, like "3"`,
			&ErrorDetail{Location: "header.If-None-Match", Message: "not an entity tag"})
	}
	pre.Absent = m.any
	for _, t := range m.tags {
		if v, ok := ourVersion(t); ok && v > 0 {
			pre.NotVersions = append(pre.NotVersions, v)
		}
	}
	return pre, nil
}

// noneMatch is an If-None-Match header (RFC 9110 13.1.2): "*", or entity tags held without
// their weak prefix, since If-None-Match compares weakly (W/"3" names "3" too).
type noneMatch struct {
	any  bool
	tags []string
}

// parseIfNoneMatch reads an If-None-Match header; ok is false when it is neither "*" nor a
// list of entity tags ("*" inside a list is not one: the grammar allows it alone).
func parseIfNoneMatch(h string) (m noneMatch, ok bool) {
	h = strings.TrimSpace(h)
	if h == "*" {
		return noneMatch{any: true}, true
	}
	tags, ok := parseETags(h)
	if !ok {
		return noneMatch{}, false
	}
	for i, t := range tags {
		tags[i] = strings.TrimPrefix(t, "W/")
	}
	return noneMatch{tags: tags}, true
}

// noneMatchNames reports whether a conditional GET's If-None-Match names current, the
// resource's ETag, or is "*": the answer is then a 304. An absent header, or one that is
// not "*" nor a list of entity tags, names nothing: the resource is sent in full, which is
// never a wrong answer to a GET.
func noneMatchNames(header, current string) bool {
	m, ok := parseIfNoneMatch(header)
	if !ok {
		return false
	}
	return m.any || slices.Contains(m.tags, current)
}

// notModified answers a conditional GET: a 304 carrying the current ETag when the
// If-None-Match header names it (see noneMatchNames), nil otherwise.
func notModified(header, current string) error {
	if !noneMatchNames(header, current) {
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
