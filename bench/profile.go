package main

import "context"

// profileMisses is filled in below.
func (b *bench) profileMisses(ctx context.Context) {}
