package stack

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
)

func TestParseListeners(t *testing.T) {
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for _, tc := range []struct {
		name, table string
		want        []string
	}{
		{"ipv4 loopback", header + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			[]string{"127.0.0.1:8080"}},
		{"ipv4 any", header + "   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			[]string{"0.0.0.0:8081"}},
		{"ipv6 loopback", header + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			[]string{"[::1]:8080"}},
		{"ipv6 any", header + "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			[]string{"[::]:8080"}},
		{"ipv4-mapped loopback", header + "   0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			[]string{"127.0.0.1:8080"}},
		{"established, not listening", header + "   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n",
			nil},
		{"another process's socket", header + "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n",
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseListeners(tc.table, map[string]bool{"111": true})
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, ap := range got {
				s = append(s, ap.String())
			}
			if !slices.Equal(s, tc.want) {
				t.Errorf("got %v, want %v", s, tc.want)
			}
		})
	}
}

func TestListenAddrsFindsOwnListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := netip.MustParseAddrPort(l.Addr().String())
	got, err := ListenAddrs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, want) {
		t.Errorf("ListenAddrs(self) = %v, want it to contain %s", got, want)
	}
}
