package auth

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Role
		ok   bool
	}{
		{"viewer", Viewer, true},
		{"editor", Editor, true},
		{"admin", Admin, true},
		{"runtime", Runtime, true},
		{"", RoleNone, false},
		{"none", RoleNone, false},
		{"Admin", RoleNone, false},
		{" admin", RoleNone, false},
		{"root", RoleNone, false},
	} {
		got, err := ParseRole(tc.in)
		if tc.ok {
			require.NoError(t, err, tc.in)
			require.Equal(t, tc.in, got.String())
		} else {
			require.ErrorIs(t, err, ErrUnknownRole, tc.in)
		}
		require.Equal(t, tc.want, got, tc.in)
	}
}

func TestRoleAllows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		have, need Role
		want       bool
	}{
		{Viewer, Viewer, true},
		{Viewer, Editor, false},
		{Viewer, Admin, false},
		{Editor, Viewer, true},
		{Editor, Editor, true},
		{Editor, Admin, false},
		{Admin, Viewer, true},
		{Admin, Admin, true},
		{RoleNone, RoleNone, false},
		{RoleNone, Viewer, false},
		{Role(4), Admin, false},
		{Runtime, Runtime, true},
		{Admin, Runtime, true},
		{Editor, Runtime, false},
		{Viewer, Runtime, false},
		{RoleNone, Runtime, false},
		{Runtime, Viewer, false},
		{Runtime, Editor, false},
		{Runtime, Admin, false},
		{Runtime, RoleNone, false},
		{Role(-1), RoleNone, false},
	} {
		require.Equal(t, tc.want, tc.have.Allows(tc.need), "%s allows %s", tc.have, tc.need)
	}
	require.Equal(t, "none", RoleNone.String())
	require.Equal(t, "Role(9)", Role(9).String())
}

func TestValidTenant(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"default", true},
		{"acme-1", true},
		{"a", true},
		{"0_x", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"-acme", false},
		{"_acme", false},
		{"Acme", false},
		{"acme/../x", false},
		{"..", false},
		{"acme.corp", false},
		{"acme\n", false},
	} {
		require.Equal(t, tc.want, ValidTenant(tc.in), "%q", tc.in)
	}
}
