using System.Text.Json.Nodes;
using Retrieval.Core.Artifact;
using Retrieval.Core.Data;
using Retrieval.Core.Features;

namespace Retrieval.Core.Tests;

/// <summary>The context feature plugins beyond the tutorial's: hand-checked encodings, out-of-vocabulary rows, save and load.</summary>
public class ContextFeatureTests
{
    private static int Index<T>(Feature<T> feature, T input)
    {
        Span<int> indices = stackalloc int[feature.Width];
        feature.Encode(input, indices, []);
        return indices[0];
    }

    private static Feature<QueryInput> RoundTrip(Feature<QueryInput> feature)
    {
        using var dir = new TempDirectory();
        var state = JsonNode.Parse(feature.Save(dir.Path).ToJsonString())!.AsObject();
        return FeatureCatalog.LoadQuery(state, dir.Path);
    }

    [Fact]
    public void QuantileBuckets_MergeRepeatedQuantiles_AndKeepRowZeroForMissing()
    {
        var buckets = QuantileBuckets.Fit([0, 0, 0, 0, 1, 2, 3, 4, 5, 100], count: 5);
        // Quantiles at 1/5 .. 4/5 of the sorted values (positions 1, 3, 5, 7): 0 and 0 (dropped: the minimum), 2, 4.
        Assert.Equal([2.0, 4], buckets.Boundaries);
        Assert.Equal(1, buckets.Bucket(-7));
        Assert.Equal(1, buckets.Bucket(1));
        Assert.Equal(2, buckets.Bucket(2));
        Assert.Equal(3, buckets.Bucket(4));
        Assert.Equal(3, buckets.Bucket(1e9));
        Assert.Equal(4, buckets.Cardinality);
    }

    [Fact]
    public void UserHistory_ActivityAt_CountsRatingsStrictlyBefore_AndIsZeroForUnknownUsers()
    {
        var history = UserHistory.FromRatings([("a", 1, 300), ("a", 2, 100), ("a", 3, 200), ("b", 1, 50)]);
        Assert.Equal(new UserActivity(0, 100), history.ActivityAt("a", 100));
        Assert.Equal(new UserActivity(1, 100), history.ActivityAt("a", 101));
        Assert.Equal(new UserActivity(3, 100), history.ActivityAt("a", 1_000));
        Assert.Equal(default, history.ActivityAt("nobody", 1_000));
        Assert.Equal(900, history.ActivityAt("a", 1_000).SecondsSinceFirstRating(1_000));
        Assert.Equal(0, default(UserActivity).SecondsSinceFirstRating(1_000));
    }

    [Fact]
    public void UserHistory_RoundTripsRatingTimes_AndReadsHistoriesWithoutThem()
    {
        using var dir = new TempDirectory();
        var history = UserHistory.FromRatings([("a", 9, 300), ("a", 2, 100), ("b", 1, 5_000_000_000)]);
        history.Write(dir.Path);
        var read = UserHistory.Read(dir.Path);
        Assert.Equal([2, 9], read.RatedBy("a").ToArray());
        Assert.Equal(new UserActivity(1, 5_000_000_000), read.ActivityAt("b", 5_000_000_001));

        // A history written before rating times were shipped: movies still there, no activity.
        File.Delete(Path.Combine(dir.Path, UserHistory.File));
        SafeTensors.Write(Path.Combine(dir.Path, UserHistory.File),
            [NamedTensor.Of("offsets", new[] { 0, 2, 3 }, 3), NamedTensor.Of("movie_ids", new[] { 2, 9, 1 }, 3)]);
        var old = UserHistory.Read(dir.Path);
        Assert.Equal([2, 9], old.RatedBy("a").ToArray());
        Assert.Equal(default, old.ActivityAt("a", 1_000));
    }

    [Fact]
    public void ActivityFeatures_BucketPriorRatingsAndTimeSinceFirst_AtTrainingQuantiles()
    {
        var rows = Enumerable.Range(0, 100).Select(i => new QueryInput("u", 1_000 + i) { Activity = new UserActivity(i, 1_000) }).ToList();
        var prior = (ActivityFeature)RoundTrip(ActivityFeature.Fit(ActivityFeature.PriorRatings, rows, buckets: 4));
        var since = (ActivityFeature)RoundTrip(ActivityFeature.Fit(ActivityFeature.TimeSinceFirstRating, rows, buckets: 4));
        Assert.Equal([24.0, 49, 74], prior.Buckets.Boundaries);
        Assert.Equal(1, Index(prior, new QueryInput("new user", 5_000)));                                        // zero ratings
        Assert.Equal(2, Index(prior, new QueryInput("u", 0) { Activity = new UserActivity(30, 0) }));
        Assert.Equal(4, Index(prior, new QueryInput("u", 0) { Activity = new UserActivity(10_000, 0) }));       // beyond training: edge bucket
        Assert.Equal(3, Index(since, new QueryInput("u", 1_060) { Activity = new UserActivity(2, 1_000) }));     // 60 s since the first
        Assert.Equal(1, Index(since, new QueryInput("new user", 9_999)));
    }

    [Theory]
    [InlineData(7, "1")]
    [InlineData(18, "18")]
    [InlineData(24, "18")]
    [InlineData(35, "35")]
    [InlineData(73, "56")]
    public void AgeGroup_MapsExactAgesOntoMovieLens1MGroups(int age, string group) =>
        Assert.Equal(group, DemographicFeature.Value(DemographicFeature.AgeGroup, new UserProfile("u", age, null, null, null)));

    [Fact]
    public void Demographics_MissingOrUnseenValues_TakeTheOutOfVocabularyRow()
    {
        var rows = new[]
        {
            new QueryInput("1", 0) { Profile = new UserProfile("1", 24, "M", "engineer", "94110") },
            new QueryInput("2", 0) { Profile = new UserProfile("2", 40, "F", "writer", "T8H1N") },
        };
        var gender = RoundTrip(DemographicFeature.Fit(DemographicFeature.Gender, rows));
        var occupation = RoundTrip(DemographicFeature.Fit(DemographicFeature.Occupation, rows));
        var zip = RoundTrip(DemographicFeature.Fit(DemographicFeature.ZipPrefix, rows));
        Assert.Equal(2, Index(gender, rows[0]));
        Assert.Equal(1, Index(gender, new QueryInput("x", 0) { Profile = new UserProfile("x", null, "f", null, null) }));
        Assert.Equal(0, Index(gender, new QueryInput("x", 0)));                                                     // no profile
        Assert.Equal(0, Index(occupation, new QueryInput("x", 0) { Profile = new UserProfile("x", null, null, "astronaut", null) }));
        Assert.Equal(["94", "T8"], ((DemographicFeature)zip).Lookup.Vocabulary);
        Assert.Equal(1, Index(zip, new QueryInput("x", 0) { Profile = new UserProfile("x", null, null, null, "94305") }));
    }

    [Fact]
    public void TimestampClamped_PutsTimesOutsideTrainingIntoTheEdgeBuckets()
    {
        var clamped = (TimestampClamped)RoundTrip(TimestampClamped.Fit([new QueryInput("u", 100), new QueryInput("u", 200)], count: 4));
        Assert.Equal(1, clamped.Bucket(-5_000));
        Assert.Equal(1, clamped.Bucket(124));
        Assert.Equal(2, clamped.Bucket(125));
        Assert.Equal(4, clamped.Bucket(200));
        Assert.Equal(4, clamped.Bucket(5_000_000_000));
        Assert.Equal(5, clamped.Cardinality);
    }

    [Fact]
    public void Genres_AreMultiHotBags_AndAMovieWithoutGenresHasItsOwnRow()
    {
        var catalogue = new[]
        {
            new Movie(1, "A", ["Drama", "Comedy"], 1995),
            new Movie(2, "B", ["Action"], null),
        };
        var genres = GenresFeature.Fit(catalogue);
        Assert.Equal(2, genres.Width);
        Span<int> bag = stackalloc int[2];
        genres.Encode(catalogue[0], bag, []);
        Assert.Equal([4, 3], bag.ToArray());                                   // Action 2, Comedy 3, Drama 4 (row 1: no genre)
        genres.Encode(new Movie(3, "C", ["Western"], 1950), bag, []);
        Assert.Equal([1, 0], bag.ToArray());

        var year = ReleaseYearFeature.Fit(catalogue, buckets: 4);
        Assert.Equal(0, Index(year, catalogue[1]));                            // unknown year
        Assert.True(Index(year, catalogue[0]) >= 1);
    }

    [Fact]
    public void Catalog_ExpandsHistoryAndDemographicsAliases_AndRejectsUnknownNames()
    {
        Assert.Equal(["user_id", "prior_ratings", "time_since_first_rating", "age_group", "gender", "occupation", "zip_prefix"],
            FeatureCatalog.ParseQuery("user_id,history,demographics"));
        Assert.Equal("user_id,history,demographics", FeatureCatalog.Describe(FeatureCatalog.ParseQuery("user_id,history,demographics")));
        Assert.Equal(["genres", "release_year"], FeatureCatalog.ParseCandidate("genres,release_year"));
        Assert.Throws<ArgumentException>(() => FeatureCatalog.ParseQuery("user_id,shoe_size"));
    }
}
