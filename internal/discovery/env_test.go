package discovery

import (
	"maps"
	"os"
	"strings"
	"testing"
)

func TestParseEnvGolden(t *testing.T) {
	f, err := os.Open("testdata/etcd.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env, err := ParseEnv(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ETCDCTL_CACERT":                       "/etc/kubernetes/static-pod-certs/configmaps/etcd-serving-ca/ca-bundle.crt",
		"ETCDCTL_CERT":                         "/etc/kubernetes/static-pod-certs/secrets/etcd-all-certs/etcd-peer-NODE_NAME.crt",
		"ETCDCTL_KEY":                          "/etc/kubernetes/static-pod-certs/secrets/etcd-all-certs/etcd-peer-NODE_NAME.key",
		"ETCDCTL_ENDPOINTS":                    "https://10.0.0.4:2379,https://10.0.0.5:2379,https://10.0.0.3:2379",
		"NODE_master_0_example_test_IP":        "10.0.0.3",
		"NODE_master_2_example_test_IP":        "10.0.0.5",
		"ETCD_QUOTA_BACKEND_BYTES":             "8589934592",
		"NODE_master_1_example_test_ETCD_NAME": "master-1.example.test",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if len(env) != 24 {
		t.Errorf("got %d variables, want 24", len(env))
	}
}

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"export double quoted", `export A="x y"`, map[string]string{"A": "x y"}},
		{"plain", "A=b", map[string]string{"A": "b"}},
		{"single quoted", `A='it "is" $x \n'`, map[string]string{"A": `it "is" $x \n`}},
		{"no expansion", `A="${HOME}/$B"`, map[string]string{"A": "${HOME}/$B"}},
		{"escapes", `A="q\"b\\d\$e\` + "`" + `f\n"`, map[string]string{"A": "q\"b\\d$e`f\\n"}},
		{"empty values", "A=\nB=\"\"\nC=''", map[string]string{"A": "", "B": "", "C": ""}},
		{"comments and blanks", "# head\n\n  \t\nA=1 # trailing\nB=\"2\"\t# tab\n", map[string]string{"A": "1", "B": "2"}},
		{"crlf", "export A=\"1\"\r\nB=2\r\n", map[string]string{"A": "1", "B": "2"}},
		{"indented export", "  export\tA=1", map[string]string{"A": "1"}},
		{"last wins", "A=1\nA=2", map[string]string{"A": "2"}},
		{"key named export", "export=1", map[string]string{"export": "1"}},
		{"hash inside word", "A=a#b", map[string]string{"A": "a#b"}},
		{"equals in value", `A="k=v"`, map[string]string{"A": "k=v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnv(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseEnvErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no equals", "A=1\nexport B", "line 2: expected KEY=value"},
		{"bad key", "\n\n1A=2", "line 3: invalid variable name"},
		{"dash key", "A-B=2", "invalid variable name"},
		{"unterminated double", `A="x`, "line 1: value of A: unterminated double quote"},
		{"unterminated single", `A='x`, "unterminated single quote"},
		{"command after value", "A=a b", `unexpected "b"`},
		{"concatenation", `A="a"b`, `unexpected "b"`},
		{"quote in word", `A=a"b"`, "unsupported quoting"},
		{"backslash in word", `A=a\ b`, "unsupported quoting"},
		{"too large", strings.Repeat("#", maxEnvSize+1), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEnv(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// shellQuote double-quotes v the way a shell script writer would.
func shellQuote(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`")
	return `"` + r.Replace(v) + `"`
}

func FuzzParseEnv(f *testing.F) {
	golden, err := os.ReadFile("testdata/etcd.env")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(golden), "ETCDCTL_CERT", "/etc/kubernetes/x-NODE_NAME.crt")
	f.Add("A='b\nC=\"d\\\"", "A", `q"\$`+"`")
	f.Add("export  =\r\n#", "_", "")
	f.Fuzz(func(t *testing.T, data, key, value string) {
		// Any input: no panic, and a result only without an error.
		if env, err := ParseEnv(strings.NewReader(data)); err != nil && env != nil {
			t.Fatalf("both a result and an error: %v", err)
		}
		if !validKey(key) || strings.ContainsAny(value, "\r\n") {
			return
		}
		for _, line := range []string{
			key + "=" + shellQuote(value),
			"export " + key + "=" + shellQuote(value) + " # comment",
		} {
			env, err := ParseEnv(strings.NewReader("# generated\n" + line + "\r\n"))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if got := env[key]; got != value || len(env) != 1 {
				t.Fatalf("%q: got %q, want {%s: %q}", line, env, key, value)
			}
		}
		if value != "" && !strings.ContainsAny(value, " \t\"'\\") {
			env, err := ParseEnv(strings.NewReader(key + "=" + value))
			if err != nil || env[key] != value {
				t.Fatalf("unquoted %q: got %q, %v", value, env, err)
			}
		}
	})
}
