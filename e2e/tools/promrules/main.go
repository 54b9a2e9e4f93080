// Command promrules checks Prometheus rule files as Prometheus loads them: YAML fields,
// PromQL expressions and alert templates. It prints one line per problem and exits 1 when
// there is any, or prints "N groups, M rules: ok".
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promrules FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation,
			parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
		for _, err := range errs {
			fmt.Println(err)
			failed = true
		}
		if groups != nil && len(errs) == 0 {
			rules := 0
			for _, group := range groups.Groups {
				rules += len(group.Rules)
			}
			fmt.Printf("%s: %d groups, %d rules: ok\n", file, len(groups.Groups), rules)
		}
	}
	if failed {
		os.Exit(1)
	}
}
