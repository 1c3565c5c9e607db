package material

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/secret"
)

// Sentinel errors of ReadFile, for callers that branch with errors.Is. Missing and
// unreadable files wrap the os errors instead (fs.ErrNotExist, fs.ErrPermission).
var (
	// ErrRelativePath means the path is not absolute.
	ErrRelativePath = errors.New("path is not absolute")
	// ErrOutsideRoots means the path, as written and cleaned, lies outside every
	// LOOPZE_FILE_ROOTS root. It is decided before the file system is looked at.
	ErrOutsideRoots = errors.New("path is outside the allowed file roots")
	// ErrNotInRoots means, for a tenant with roots, that the path lies in a root but names
	// no file there: nothing is at it, or a symlink on the way leads out of the roots. The
	// two get this one answer, so a tenant learns nothing of what exists outside its
	// roots. It is also fs.ErrNotExist.
	ErrNotInRoots error = notInRoots{}
	// ErrNotRegular means the path resolves to a directory, device, FIFO or socket.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge means the file is larger than MaxSize.
	ErrTooLarge = fmt.Errorf("file is larger than the %d KiB limit", MaxSize>>10)
	// ErrPathChanged means the path kept changing while it was read (a rotation racing the read).
	ErrPathChanged = errors.New("path changed while it was being read")
	// ErrFileRootsRequired means a tenant other than DefaultTenant named a file while no
	// roots are configured. It wraps ErrOutsideRoots: without roots such a tenant has none,
	// so every path lies outside them.
	ErrFileRootsRequired = fmt.Errorf("%w: file-sourced material of tenants other than %q needs LOOPZE_FILE_ROOTS, which is unset; "+
		"set it to the directories each tenant may read, e.g. LOOPZE_FILE_ROOTS=/etc/loopze/certs/{tenant}", ErrOutsideRoots, DefaultTenant)
)

// DefaultTenant is the single-tenant installation's tenant. Without roots it may name any
// absolute path, as the operator documentation promises; every other tenant needs roots,
// or one tenant's editors could read another's key files.
const DefaultTenant = "default"

// TenantPlaceholder is replaced by the tenant ID in each root.
const TenantPlaceholder = "{tenant}"

// Roots confines the paths of file-sourced material (LOOPZE_FILE_ROOTS). Each root is an
// absolute directory and may contain "{tenant}", so one setting gives every tenant its own
// directory. Empty Roots allows the default tenant any absolute path, as the operator
// documentation promises, and every other tenant none (ErrFileRootsRequired).
//
// On Linux a read walks the path from the root's directory descriptor one component at a
// time, never letting the kernel follow a symlink, and resolves each link itself: a
// local user who swaps directories and symlinks inside a root while it is read cannot make
// it return a file outside the roots. Elsewhere links are resolved first and the file
// opened after, which a user able to rewrite a root during the read can race.
type Roots []string

// notInRoots is ErrNotInRoots: its own type so that it is fs.ErrNotExist too, with a
// message of its own.
type notInRoots struct{}

func (notInRoots) Error() string {
	return "no such file within the allowed file roots (missing, or a symlink on the way leads out of them)"
}

func (notInRoots) Is(target error) bool { return target == fs.ErrNotExist }

// errLeadsOut is what the walk of a path reports when a symlink names a place in no root;
// ReadFile answers it as ErrNotInRoots, exactly like a missing file.
var errLeadsOut = errors.New("a symlink leads out of the allowed file roots")

// ParseRoots splits a LOOPZE_FILE_ROOTS value on the OS path-list separator (':' on Unix),
// dropping empty elements and cleaning each root. Relative roots are kept, and admit
// nothing: dropping them could turn a typo into "any path allowed". Validate reports them.
func ParseRoots(s string) Roots {
	var r Roots
	for _, p := range filepath.SplitList(s) {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		r = append(r, filepath.Clean(p))
	}
	return r
}

// Validate reports roots that can never admit a path, so configuration loading can refuse
// them at startup instead of every file entry failing later.
func (r Roots) Validate() error {
	var errs []error
	for _, root := range r {
		if !filepath.IsAbs(root) {
			errs = append(errs, fmt.Errorf("file root %s: %w", root, ErrRelativePath))
		}
	}
	return errors.Join(errs...)
}

// ReadFile reads one material file for tenant. The path must be absolute; it is cleaned
// (filepath.Clean) and the cleaned path is the one read. Symlinks are followed (certbot
// live/ links, Kubernetes ..data swaps) and the final target must be a regular file of at
// most MaxSize bytes.
//
// When r is non-empty, the cleaned path must lie inside one root, with {tenant} expanded,
// compared on path boundaries (/a/b does not admit /a/bc), before anything on the file
// system is looked at: a path outside the roots gets the same answer (ErrOutsideRoots)
// whether it exists, is a directory or is unreadable. The read then starts at the root
// and follows a symlink only to a place inside one of the tenant's roots (as configured,
// or with the root's own symlinks resolved), re-entering at that root: nothing outside
// the roots is looked at. A link that leads out and a file that is not there both get
// ErrNotInRoots, without naming the target. When r is empty, only DefaultTenant may read
// files, anywhere, and errors say precisely what is wrong. Errors name the path and why,
// never the contents.
func (r Roots) ReadFile(tenant, path string) (secret.PEM, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("read %s: %w", path, ErrRelativePath)
	}
	if err := r.Admits(tenant, path); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	// A Kubernetes secret update swaps the ..data link and then deletes the old directory;
	// a read that resolved just before the swap finds its target gone. Resolving again
	// reaches the new one.
	const attempts = 3
	var err error
	for range attempts {
		var data secret.PEM
		data, err = r.readOnce(tenant, path)
		if err == nil {
			return data, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrPathChanged) {
			return nil, err
		}
		// Without roots, a path that is itself missing is no swap in progress. With roots,
		// asking would follow links out of them, and how long the answer took would tell
		// whether the link's target exists: every attempt is made.
		if len(r) == 0 {
			if _, lerr := os.Lstat(path); errors.Is(lerr, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	return nil, err
}

// Admits checks, without touching the file system at path, whether tenant may name path:
// ErrRelativePath, ErrFileRootsRequired (no roots, a tenant other than DefaultTenant) or
// ErrOutsideRoots (the cleaned path lies in no root), else nil. ReadFile still checks where
// symlinks lead.
func (r Roots) Admits(tenant, path string) error {
	if !filepath.IsAbs(path) {
		return ErrRelativePath
	}
	if len(r) == 0 {
		if tenant != DefaultTenant {
			return ErrFileRootsRequired
		}
		return nil
	}
	if !r.admit(tenant, filepath.Clean(path)) {
		return ErrOutsideRoots
	}
	return nil
}

func (r Roots) readOnce(tenant, path string) (secret.PEM, error) {
	clean := filepath.Clean(path)
	// Most paths hold no symlink at all; where the kernel can tell, one call reads them.
	if resolved, data, ok := readDirect(clean); ok && (len(r) == 0 || r.admit(tenant, resolved)) {
		return secret.PEM(data), nil
	}
	f, resolved, err := r.open(tenant, clean)
	// where names the file in errors, only built when there is one.
	where := func() string {
		if resolved != "" && resolved != clean {
			return fmt.Sprintf("%s (resolves to %s)", path, resolved)
		}
		return path
	}
	if err != nil {
		if len(r) > 0 {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errLeadsOut) {
				return nil, fmt.Errorf("read %s: %w", path, ErrNotInRoots)
			}
			// The reason only: the place it failed is one the tenant did not write.
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
		}
		return nil, fmt.Errorf("read %s: %w", where(), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", where(), err)
	}
	data, err := readAll(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", where(), err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("read %s: %w", where(), ErrTooLarge)
	}
	return secret.PEM(data), nil
}

// readAll reads f to its end, or to one byte past MaxSize. size is the size fstat gave, so
// an unchanged file is read into one buffer of the right size; a file that grew meanwhile
// is still read to its end.
func readAll(f io.Reader, size int64) ([]byte, error) {
	buf := make([]byte, 0, min(max(size, 0), MaxSize)+1)
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) > MaxSize {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), MaxSize+1-len(buf)))
		}
	}
}

// admit reports whether p (clean and absolute) lies inside one of the roots for tenant,
// as written or with the root's own symlinks resolved.
func (r Roots) admit(tenant, p string) bool {
	for _, root := range r.of(tenant) {
		if within(root, p) {
			return true
		}
		if real, err := filepath.EvalSymlinks(root); err == nil && within(real, p) {
			return true
		}
	}
	return false
}

// of is tenant's roots, {tenant} expanded and cleaned; a root that is not absolute, or
// whose {tenant} would move it elsewhere, is none.
func (r Roots) of(tenant string) []string {
	out := make([]string, 0, len(r))
	for _, root := range r {
		if strings.Contains(root, TenantPlaceholder) {
			if !safeTenant(tenant) {
				continue
			}
			root = strings.ReplaceAll(root, TenantPlaceholder, tenant)
		}
		if filepath.IsAbs(root) {
			out = append(out, filepath.Clean(root))
		}
	}
	return out
}

// safeTenant refuses tenant IDs that would move a {tenant} root somewhere else.
func safeTenant(t string) bool {
	return t != "" && t != "." && t != ".." && !strings.ContainsAny(t, `/\`) && !strings.ContainsRune(t, filepath.ListSeparator)
}

// within reports whether path is root or below it, on path boundaries.
func within(root, path string) bool {
	if path == root {
		return true
	}
	if !strings.HasPrefix(path, root) {
		return false
	}
	// On a path boundary: root ends with the separator (it is "/"), or path continues
	// with one.
	return strings.HasSuffix(root, string(filepath.Separator)) || path[len(root)] == filepath.Separator
}

// FileKind names what a non-regular file is, for errors: "a FIFO", "a directory", ...
func FileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.Type().String()
}

// LoadFiles reads certPath (and keyPath for pairs) and inspects the result: LoadFilesWith
// without a passphrase file.
func (r Roots) LoadFiles(ctx context.Context, k Kind, tenant, certPath, keyPath string, f Fields, now time.Time, b Budget) (*Material, []Issue, error) {
	return r.LoadFilesWith(ctx, k, tenant, Paths{Cert: certPath, Key: keyPath}, f, now, b)
}

// Paths are the files of a file-sourced entry.
type Paths struct {
	// Cert holds PEM or DER certificates, or a PKCS#12 file with the pair's key.
	Cert string
	// Key holds the pair's key, PEM or DER, possibly encrypted; empty with a PKCS#12.
	Key string
	// Passphrase is a file whose first line is the passphrase of the PKCS#12 or of the
	// encrypted key; empty when nothing is encrypted.
	Passphrase string
}

// MaxPassphraseFile bounds a passphrase file.
const MaxPassphraseFile = 4 << 10

// LoadFilesWith reads the files of p through ReadFile, decodes whatever encoding they are
// in (Decode) and inspects the result. Read errors become issues on f.Cert / f.Key /
// f.Passphrase; Inspect's issues about a field whose file could not be read are dropped,
// since they would only repeat that it is missing. Empty names in f default to PathFields.
// Key derivations (a PKCS#12, an encrypted key) are charged to tenant under b, as
// FileSet.Decode says. It is ReadFiles followed by FileSet.Decode.
func (r Roots) LoadFilesWith(ctx context.Context, k Kind, tenant string, p Paths, f Fields, now time.Time, b Budget) (*Material, []Issue, error) {
	return r.ReadFiles(k, tenant, p, f).Decode(ctx, now, b)
}

// FileSet is what ReadFiles read of a file-sourced entry's files, and the problems reading
// them, ready for Decode. It holds key bytes: never log it.
type FileSet struct {
	k         Kind
	tenant    string
	f         Fields
	cert, key secret.PEM
	pass      secret.String
	isP12     bool
	issues    []Issue
	// unread marks the fields whose file could not be read (or was refused).
	unread map[string]bool
}

// ReadFiles reads the files of p through ReadFile, as LoadFilesWith does, without decoding
// them. Empty names in f default to PathFields.
func (r Roots) ReadFiles(k Kind, tenant string, p Paths, f Fields) *FileSet {
	if f.Cert == "" {
		f.Cert = PathFields.Cert
	}
	if f.Key == "" {
		f.Key = PathFields.Key
	}
	if f.Passphrase == "" {
		f.Passphrase = PathFields.Passphrase
	}
	s := &FileSet{k: k, tenant: tenant, f: f}
	read := func(field, path, what string) secret.PEM {
		if strings.TrimSpace(path) == "" {
			s.fail(field, what+" path is required")
			return nil
		}
		data, err := r.ReadFile(tenant, path)
		if err != nil {
			s.fail(field, err.Error())
		}
		return data
	}
	s.cert = read(f.Cert, p.Cert, "a certificate")
	_, s.isP12 = DetectFile(s.cert)
	switch {
	case k.IsPair() && s.isP12:
		if strings.TrimSpace(p.Key) != "" {
			s.fail(f.Key, "the PKCS#12 file in "+f.Cert+" carries the key: leave "+f.Key+" empty")
		}
	case k.IsPair():
		s.key = read(f.Key, p.Key, "a private key")
	case k == CABundle && strings.TrimSpace(p.Key) != "":
		s.fail(f.Key, "a ca-bundle carries no private key: leave "+f.Key+" empty")
	}
	if strings.TrimSpace(p.Passphrase) != "" {
		data, err := r.ReadFile(tenant, p.Passphrase)
		before := len(s.issues)
		switch {
		case err != nil:
			s.issues = append(s.issues, Issue{Field: f.Passphrase, Message: err.Error()})
		case len(data) > MaxPassphraseFile:
			s.issues = append(s.issues, Issue{Field: f.Passphrase, Message: fmt.Sprintf("the passphrase file is over the %d KiB limit", MaxPassphraseFile>>10)})
		default:
			line, _, _ := strings.Cut(string(data), "\n")
			s.pass = secret.String(strings.TrimSuffix(line, "\r"))
			if s.pass == "" {
				s.issues = append(s.issues, Issue{Field: f.Passphrase, Message: "the passphrase file is empty"})
			}
		}
		s.setUnread(f.Passphrase, len(s.issues) > before)
	}
	return s
}

// fail records a problem reading field's file.
func (s *FileSet) fail(field, msg string) {
	s.issues = append(s.issues, Issue{Field: field, Message: msg})
	s.setUnread(field, true)
}

func (s *FileSet) setUnread(field string, v bool) {
	if s.unread == nil {
		if !v {
			return
		}
		s.unread = map[string]bool{}
	}
	s.unread[field] = v
}

// Issues are the problems reading the files; empty when every file was read.
func (s *FileSet) Issues() []Issue { return s.issues }

// Sum is a SHA-256 over the bytes read (certificate, key and passphrase files, each
// length-prefixed): equal sums mean Decode would see the same input. It identifies the
// contents without keeping them.
func (s *FileSet) Sum() [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, b := range [][]byte{s.cert, s.key} {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	binary.BigEndian.PutUint64(n[:], uint64(len(s.pass)))
	h.Write(n[:])
	_, _ = io.WriteString(h, s.pass.Reveal())
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Decode decodes and inspects what was read, as LoadFilesWith does: the read problems come
// first, and Inspect's issues about a field whose file could not be read are dropped. Key
// derivations run under b (nil: at once), charged to the tenant the files were read for;
// err, wrapping ErrNotAdmitted, means they could not run now and nothing was judged.
func (s *FileSet) Decode(ctx context.Context, now time.Time, b Budget) (*Material, []Issue, error) {
	f, cert, key, pass, isP12 := s.f, s.cert, s.key, s.pass, s.isP12
	issues := append([]Issue(nil), s.issues...)
	if len(issues) > 0 && (s.unread[f.Cert] || s.unread[f.Passphrase]) {
		return nil, issues, nil
	}
	enc := Encoded{}
	ef := EncodedFields{CertPEM: f.Cert, CertDER: f.Cert, PKCS12: f.Cert, KeyPEM: f.Key, KeyDER: f.Key,
		Passphrase: f.Passphrase, KeyPassphrase: f.Passphrase}
	if certPEM, _ := DetectFile(cert); certPEM || len(cert) == 0 {
		enc.CertPEM = cert
	} else if isP12 {
		enc.PKCS12, enc.Passphrase = secret.Bytes(cert), pass
	} else {
		enc.CertDER = secret.Bytes(cert)
	}
	if !isP12 {
		if keyPEM, _ := DetectFile(key); keyPEM || len(key) == 0 {
			enc.KeyPEM = key
		} else {
			enc.KeyDER = secret.Bytes(key)
		}
		enc.KeyPassphrase = pass
	}
	m, _, errs, err := Decode(ctx, s.k, enc, ef, now, KDF{Budget: b, Tenant: s.tenant})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range errs {
		if !s.unread[e.Field] {
			issues = append(issues, e)
		}
	}
	if len(issues) > 0 {
		return nil, issues, nil
	}
	return m, nil, nil
}
