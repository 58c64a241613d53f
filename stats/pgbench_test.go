package stats

import (
	"context"
	"testing"
	"time"
)

func BenchmarkPostgresSinkWrite(b *testing.B) {
	url := freshDB(b, pgForBench(b))
	sink, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	batch := pointRecs("e1", 1, DefaultSinkBatch, func(int) time.Time { return time.Now() })
	b.ResetTimer()
	start := time.Now()
	seq := uint64(0)
	for done := 0; done < b.N; done += len(batch) {
		for i := range batch {
			seq++
			batch[i].Seq, batch[i].Index = seq, seq
		}
		if err := sink.Write(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(seq)/time.Since(start).Seconds(), "points/s")
}
