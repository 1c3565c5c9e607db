package material

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"strconv"
)

var (
	beginMarker = []byte("-----BEGIN ")
	endMarker   = []byte("-----END ")
)

// scanPEM splits data into PEM blocks and reports, as plain messages, every part that is not
// well-formed PEM. Text before a block is tolerated: RFC 7468 allows explanatory text, and
// `openssl x509 -text` or PKCS#12 exports ("Bag Attributes") put some there. Anything after
// the last block, and any block without a matching END line or with bad base64, is an error:
// that is what a truncated paste or a corrupted file looks like. Block numbers in messages
// count from 1 in the order the blocks appear.
func scanPEM(data []byte) (blocks []numberedBlock, problems []string) {
	rest := data
	n := 0
	for {
		i := bytes.Index(rest, beginMarker)
		if i < 0 {
			if len(bytes.TrimSpace(rest)) > 0 {
				if n == 0 {
					problems = append(problems, "no PEM block found: expected PEM text between BEGIN and END lines")
				} else {
					problems = append(problems, "data after the last PEM block is not PEM (truncated or pasted twice?)")
				}
			}
			return blocks, problems
		}
		n++
		rest = rest[i:]
		// A BEGIN whose END never comes before the next BEGIN is truncated; pem.Decode would
		// silently skip it, hiding a lost certificate.
		j := bytes.Index(rest, endMarker)
		if next := bytes.Index(rest[len(beginMarker):], beginMarker); next >= 0 && (j < 0 || next+len(beginMarker) < j) {
			problems = append(problems, fmt.Sprintf("PEM block %d has no END line (truncated?)", n))
			rest = rest[next+len(beginMarker):]
			continue
		}
		if j < 0 {
			problems = append(problems, fmt.Sprintf("PEM block %d has no END line (truncated?)", n))
			return blocks, problems
		}
		k := j + bytes.IndexByte(rest[j:], '\n') + 1
		if k <= j { // END line is the last line, without a newline
			k = len(rest)
		}
		block, tail := pem.Decode(rest[:k])
		if block == nil || len(bytes.TrimSpace(tail)) > 0 {
			problems = append(problems, fmt.Sprintf("PEM block %d is malformed (bad base64, headers or END line)", n))
		} else {
			blocks = append(blocks, numberedBlock{Block: block, n: n})
		}
		rest = rest[k:]
	}
}

// numberedBlock is a decoded PEM block and its position in the input, counted from 1
// including blocks that did not decode, so messages point at what the operator sees.
type numberedBlock struct {
	*pem.Block
	n int
}

// blockLabel quotes a PEM block's type for a message, bounded so a hostile label cannot
// turn an issue into a wall of text.
func blockLabel(t string) string {
	const limit = 40
	if len(t) > limit {
		t = t[:limit] + "…"
	}
	return strconv.Quote(t)
}
