package daemon

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGetLimitEveryResource(t *testing.T) {
	for _, r := range []Resource{OpenFiles, Processes, AddressSpace, CoreSize} {
		l, err := GetLimit(r)
		require.NoError(t, err, r.String())
		assert.LessOrEqual(t, l.Soft, l.Hard, r.String())
	}
	_, err := GetLimit(Resource(42))
	assert.ErrorContains(t, err, "unknown resource 42")
}

func TestSetLimitLowersAndRestores(t *testing.T) {
	orig, err := GetLimit(CoreSize)
	require.NoError(t, err)
	defer func() { require.NoError(t, SetLimit(CoreSize, orig)) }()
	require.NoError(t, SetLimit(CoreSize, Limit{Soft: 0, Hard: orig.Hard}))
	l, err := GetLimit(CoreSize)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), l.Soft)
}

func TestSetLimitErrorsAreClear(t *testing.T) {
	err := SetLimit(OpenFiles, Limit{Soft: 10, Hard: 5})
	assert.EqualError(t, err, "daemon: set open files limit: soft 10 above hard 5")
	err = SetLimit(AddressSpace, Limit{Soft: Unlimited, Hard: 5})
	assert.ErrorContains(t, err, "soft unlimited above hard 5")
	if os.Geteuid() != 0 {
		l, err := GetLimit(OpenFiles)
		require.NoError(t, err)
		if l.Hard != Unlimited {
			err = SetLimit(OpenFiles, Limit{Soft: l.Soft, Hard: l.Hard + 1})
			assert.ErrorContains(t, err, "raising the hard limit needs root")
		}
	}
}

func TestRaiseSoftLimit(t *testing.T) {
	orig, err := GetLimit(OpenFiles)
	require.NoError(t, err)
	defer func() { require.NoError(t, SetLimit(OpenFiles, orig)) }()
	if orig.Hard > 64 {
		require.NoError(t, SetLimit(OpenFiles, Limit{Soft: 64, Hard: orig.Hard}))
	}
	l, err := RaiseSoftLimit(OpenFiles)
	require.NoError(t, err)
	assert.Equal(t, orig.Hard, l.Soft)
}
