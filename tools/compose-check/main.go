// compose-check loads docker-compose.yml with compose-go, Docker Compose's own loader, and fails on
// any error or warning: what `docker compose` would say about the file, on a machine without Docker.
//
//	compose-check [-f docker-compose.yml]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/sirupsen/logrus"
)

// warnings records what the loader logs at warning level or above (compose-go warns through logrus).
type warnings struct{ seen []string }

func (w *warnings) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (w *warnings) Fire(entry *logrus.Entry) error {
	w.seen = append(w.seen, entry.Message)
	return nil
}

func main() {
	file := flag.String("f", "docker-compose.yml", "the compose file")
	flag.Parse()
	hook := &warnings{}
	logrus.AddHook(hook)
	options, err := cli.NewProjectOptions([]string{*file}, cli.WithOsEnv, cli.WithWorkingDirectory("."),
		cli.WithConsistency(true), cli.WithResolvedPaths(true))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", *file, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", *file, err)
		os.Exit(1)
	}
	if len(hook.seen) > 0 {
		for _, message := range hook.seen {
			fmt.Fprintf(os.Stderr, "%s: warning: %s\n", *file, message)
		}
		os.Exit(1)
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("%s: project %s, %d services, %d networks, %d volumes, no warnings\n", *file, project.Name,
		len(names), len(project.Networks), len(project.Volumes))
}
