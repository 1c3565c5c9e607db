package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/repo"
)

// Checkpoint is one point of a tenant's trail remembered outside the database: a record's
// sequence number, its chain hash (a MAC for a keyed record) and the version of the key it
// was chained under (0: plain SHA-256). A trail that no longer holds that record with that
// hash was cut back or rewritten, whatever was recomputed after. The database's owner can
// change the trail but not the checkpoints kept in data directories, credentials files and
// their backups.
type Checkpoint struct {
	Tenant     string
	Seq        int64
	MAC        []byte
	KeyVersion int
	// Source says where the checkpoint was read (a file's path), for messages. It is not
	// part of the checkpoint's JSON.
	Source string
}

// checkpointJSON is a Checkpoint as files and headers carry it, the MAC in hex.
type checkpointJSON struct {
	Tenant     string `json:"tenant"`
	Seq        int64  `json:"seq"`
	MAC        string `json:"mac"`
	KeyVersion int    `json:"keyVersion"`
}

// ErrBadCheckpoint means a checkpoint does not decode, or names something no trail has.
var ErrBadCheckpoint = errors.New("malformed audit checkpoint")

// MarshalJSON writes {"tenant", "seq", "mac" (hex), "keyVersion"}.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(checkpointJSON{Tenant: c.Tenant, Seq: c.Seq, MAC: hex.EncodeToString(c.MAC), KeyVersion: c.KeyVersion})
}

// UnmarshalJSON reads what MarshalJSON writes and refuses what cannot be a checkpoint.
func (c *Checkpoint) UnmarshalJSON(b []byte) error {
	var j checkpointJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: more than one JSON value", ErrBadCheckpoint)
	}
	mac, err := hex.DecodeString(j.MAC)
	switch {
	case !validTenant(j.Tenant):
		return fmt.Errorf("%w: tenant %q", ErrBadCheckpoint, j.Tenant)
	case j.Seq < 1:
		return fmt.Errorf("%w: seq %d", ErrBadCheckpoint, j.Seq)
	case err != nil || len(mac) != len(ZeroHash):
		return fmt.Errorf("%w: mac must be %d bytes in hex", ErrBadCheckpoint, len(ZeroHash))
	case j.KeyVersion < 0:
		return fmt.Errorf("%w: keyVersion %d", ErrBadCheckpoint, j.KeyVersion)
	}
	*c = Checkpoint{Tenant: j.Tenant, Seq: j.Seq, MAC: mac, KeyVersion: j.KeyVersion, Source: c.Source}
	return nil
}

// validTenant reports whether a tenant can name a checkpoint file: a single path element
// that is not hidden. Tenant slugs (auth.ValidTenant) all are.
func validTenant(t string) bool {
	return t != "" && len(t) <= 64 && !strings.HasPrefix(t, ".") && !strings.ContainsAny(t, "/\\\x00") &&
		filepath.Base(t) == t
}

// CheckpointDir is the directory of a data directory that holds the checkpoints of the
// tenants' trails, one file per tenant: <dataDir>/audit/<tenant>.checkpoint.
func CheckpointDir(dataDir string) string { return filepath.Join(dataDir, "audit") }

const (
	checkpointExt = ".checkpoint"
	// maxCheckpointFile bounds what is read of a checkpoint file: a real one is ~150 bytes.
	maxCheckpointFile = 4 << 10
)

func checkpointPath(dir, tenant string) string { return filepath.Join(dir, tenant+checkpointExt) }

// ReadCheckpoints returns the checkpoints of dir (see CheckpointDir), by tenant; none when
// dir does not exist. A file that does not hold a checkpoint of the tenant it is named
// after is an error wrapping ErrBadCheckpoint: it is never skipped, as a checkpoint that
// is not read proves nothing.
func ReadCheckpoints(dir string) ([]Checkpoint, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	var out []Checkpoint
	for _, e := range ents {
		name := e.Name()
		tenant, ok := strings.CutSuffix(name, checkpointExt)
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		cp, found, err := readCheckpoint(dir, tenant)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, cp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out, nil
}

// readCheckpoint reads the checkpoint file of tenant in dir; found is false when there is
// none.
func readCheckpoint(dir, tenant string) (cp Checkpoint, found bool, err error) {
	path := checkpointPath(dir, tenant)
	if !validTenant(tenant) {
		return cp, false, fmt.Errorf("read audit checkpoint %s: %w: not a tenant's name", path, ErrBadCheckpoint)
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("read audit checkpoint: %w", err)
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return cp, false, fmt.Errorf("read audit checkpoint %s: %w: not a regular file", path, ErrBadCheckpoint)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCheckpointFile+1))
	if err != nil {
		return cp, false, fmt.Errorf("read audit checkpoint: %w", err)
	}
	if len(b) > maxCheckpointFile {
		return cp, false, fmt.Errorf("read audit checkpoint %s: %w: larger than %d bytes", path, ErrBadCheckpoint, maxCheckpointFile)
	}
	cp.Source = path
	if err := cp.UnmarshalJSON(b); err != nil {
		return cp, false, fmt.Errorf("read audit checkpoint %s: %w", path, err)
	}
	if cp.Tenant != tenant {
		return cp, false, fmt.Errorf("read audit checkpoint %s: %w: it names tenant %s", path, ErrBadCheckpoint, cp.Tenant)
	}
	return cp, true, nil
}

// Head returns the head of tenant's trail as a checkpoint: the last record chained, its
// hash and key version (Seq 0 when the trail is empty). q is a pool or a transaction (a
// snapshot, for a credentials file's header); the read scopes itself to the tenant. A
// head that names a record the trail does not hold, or holds with another hash, is a
// *BrokenLinkError: it is no point to remember.
func Head(ctx context.Context, q db.DBTX, tenant string) (Checkpoint, error) {
	pos, err := repo.ReadAuditPosition(ctx, q, tenant, 0)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read audit head of %s: %w", tenant, err)
	}
	return headOf(tenant, pos)
}

func headOf(tenant string, pos repo.AuditPosition) (Checkpoint, error) {
	if pos.Head.Seq == 0 {
		return Checkpoint{Tenant: tenant}, nil
	}
	if pos.AtHead == nil || !bytes.Equal(pos.AtHead.Hash, pos.Head.Hash) {
		return Checkpoint{}, &BrokenLinkError{Tenant: tenant, Seq: pos.Head.Seq,
			Reason: "the tenant's head names it, but the trail does not hold it with the head's hash"}
	}
	return Checkpoint{Tenant: tenant, Seq: pos.Head.Seq, MAC: pos.AtHead.Hash, KeyVersion: pos.AtHead.KeyVersion}, nil
}

// against checks the record the trail holds at cp's sequence number (nil: none; the trail
// ends at record last) against cp.
func (cp Checkpoint) against(at *repo.AuditLink, last int64) *BrokenLinkError {
	switch {
	case at == nil:
		return &BrokenLinkError{Tenant: cp.Tenant, Seq: cp.Seq, Reason: fmt.Sprintf(
			"missing: checkpoint %s holds it, but the trail ends at record %d: records were removed from its end", cp.source(), last)}
	case at.KeyVersion != cp.KeyVersion:
		return &BrokenLinkError{Tenant: cp.Tenant, Seq: cp.Seq, Reason: fmt.Sprintf(
			"it is chained under audit key version %d, but checkpoint %s holds version %d: it or a record before it was rewritten",
			at.KeyVersion, cp.source(), cp.KeyVersion)}
	case !bytes.Equal(at.Hash, cp.MAC):
		return &BrokenLinkError{Tenant: cp.Tenant, Seq: cp.Seq, Reason: fmt.Sprintf(
			"its hash differs from checkpoint %s: it or a record before it was altered, or records before it were removed", cp.source())}
	}
	return nil
}

func (cp Checkpoint) source() string {
	if cp.Source == "" {
		return "given"
	}
	return cp.Source
}

// checkpointMu serialises this process's checkpoint writes; the file lock, those of
// processes sharing the directory.
var checkpointMu sync.Mutex

// privateDir creates dir 0700, or makes it 0700: only the server's user reads checkpoints.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o700 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// advanceCheckpoint moves tenant's checkpoint file in dir to the trail's head, and returns
// the checkpoint the file holds after. Writers sharing dir take the file's lock first, and
// read the database only once they hold it, so the checkpoint never goes back. It moves
// only along the trail it checkpointed: when the trail no longer holds the file's record
// with its hash, or its head is before it, the file is kept as it is (it is the evidence)
// and the error is a *BrokenLinkError. The file is written durably, 0600, in a 0700
// directory.
func advanceCheckpoint(ctx context.Context, q db.DBTX, dir, tenant string) (Checkpoint, error) {
	if !validTenant(tenant) {
		return Checkpoint{}, fmt.Errorf("checkpoint audit trail of %q: %w: not a tenant's name", tenant, ErrBadCheckpoint)
	}
	if err := privateDir(dir); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	checkpointMu.Lock()
	defer checkpointMu.Unlock()
	unlock, err := durable.Lock(ctx, filepath.Join(dir, "."+tenant+checkpointExt+".lock"))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	defer unlock()
	old, found, err := readCheckpoint(dir, tenant)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	pos, err := repo.ReadAuditPosition(ctx, q, tenant, old.Seq)
	if err != nil {
		return old, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	if found {
		if b := old.against(pos.At, pos.Head.Seq); b != nil {
			return old, b
		}
	}
	head, err := headOf(tenant, pos)
	if err != nil {
		return old, err
	}
	if found && head.Seq < old.Seq {
		return old, &BrokenLinkError{Tenant: tenant, Seq: old.Seq, Reason: fmt.Sprintf(
			"checkpoint %s holds it, but the tenant's head is record %d: records were removed from the trail's end", old.source(), head.Seq)}
	}
	if head.Seq == 0 || (found && head.Seq == old.Seq) {
		return old, nil
	}
	b, err := json.Marshal(head)
	if err != nil {
		return old, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	path := checkpointPath(dir, tenant)
	durable.RemoveTemps(path) // a killed writer's; this one holds the lock
	if err := durable.Replace(path, append(b, '\n'), durable.Mode(0o600)); err != nil {
		return old, fmt.Errorf("checkpoint audit trail of %s: %w", tenant, err)
	}
	head.Source = path
	return head, nil
}
