package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestREADMEDocumentsEveryFlag keeps the README's flag reference whole: a
// flag added to a command fails this test until it is documented.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, cmd := range commands() {
		if !strings.Contains(readme, "`"+cmd.name) {
			t.Errorf("README does not mention the %s command", cmd.name)
		}
		fs, _, _ := newFlagSet(cmd)
		fs.VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(readme, "`--"+f.Name+"`") {
				t.Errorf("README does not document %s --%s", cmd.name, f.Name)
			}
		})
	}
}
