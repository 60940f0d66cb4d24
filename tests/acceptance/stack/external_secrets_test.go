package stack

import (
	"net"
	"os"
	"slices"
	"testing"
)

func TestProcNetAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "0100007F:1F90", want: "127.0.0.1:8080"},
		{in: "00000000:0050", want: "0.0.0.0:80"},
		{in: "00000000000000000000000001000000:2383", want: "[::1]:9091"},
		{in: "00000000000000000000000000000000:24D5", want: "[::]:9429"},
		{in: "0100007F", wantErr: true},
		{in: "0100:1F90", wantErr: true},
		{in: "0100007F:XYZ", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := procNetAddr(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("procNetAddr(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestListeningAddrsFindsOwnListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ListeningAddrs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, l.Addr().String()) {
		t.Fatalf("listening on %s, ListeningAddrs says %v", l.Addr(), addrs)
	}
	l.Close()
	addrs, err = ListeningAddrs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(addrs, l.Addr().String()) {
		t.Fatalf("closed %s, ListeningAddrs still lists it: %v", l.Addr(), addrs)
	}
}
