// Package nodetls is the runtime side of the LOOPZE certificate store: it turns a flow
// node's tls block into a *tls.Config from a tenant's credentials.json and its runtime key
// (written by `loopze-certs runtime-key`, it opens that tenant's file and no other), with
// no database and no server in the connection path.
//
// A runtime opens the file the store's export job writes (or a copy Sync keeps current
// from a remote server) once, and asks for a config at every connection init:
//
//	store, err := nodetls.Open("/var/lib/loopze/credentials.json", "/etc/loopze/acme.runtime-key")
//	...
//	cfg, err := store.Config(ctx, "ingest-line-1", "mqtt-out-3")
//	conn, err := tls.Dial("tcp", "broker:8883", cfg)
//
// The semantics are the store's own: references (caBundleRef, clientCertRef,
// serverCertRef, an opcua-server node's certRef) are type-checked against the tenant's
// entries; inline material comes from the decrypted snapshot held in memory; file material
// (file-sourced entries and direct caBundleFile / clientCertFile / ... paths) is read from
// disk at every call, and decoded again whenever the bytes differ from the last decode,
// with one retry after a short pause when a certificate and its key were caught between
// the two renames of a rotation. A connection already open keeps the
// material it was opened with; the next Config sees the new files.
//
// The snapshot follows the file: each call compares the file's inode, size and
// modification time with the loaded ones and reloads when they changed. A file that is
// torn, tampered with, another tenant's, sealed under an unknown key, not a regular file,
// over MaxFileSize, or older than one accepted before is refused; the last good snapshot
// keeps serving, Err reports the refusal and Options.OnRefused hears of it. "Accepted
// before" outlives the process: the highest generation taken is kept beside the file in
// credentials.json.floor, so a copy of an older file put back is refused after a restart
// too, until that floor file is deleted. The key file is read again when it changes: a
// file sealed under a version of the tenant's key the runtime key lacks (after
// `rotate-key --tenant`) is refused with ErrUnknownKey naming that version, until the new
// runtime key is put in place.
//
// Sync (and Syncer) keep a copy from a remote server over https only; plain http is
// allowed to a loopback host when the caller opts in with Syncer.AllowLoopbackHTTP.
//
// Nothing in this package logs or returns PEM, private keys or file contents: errors name
// the file, flow, node and field. Errors are tested with errors.Is against the package's
// sentinels (ErrNodeNotFound, ErrWrongType, ErrStaleFile, ...).
package nodetls
