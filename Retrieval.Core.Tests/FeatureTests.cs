using Retrieval.Core.Data;
using Retrieval.Core.Features;

namespace Retrieval.Core.Tests;

public class FeatureTests
{
    [Fact]
    public void StringLookup_SortsVocabularyByBytes_AndMapsUnknownToZero()
    {
        var lookup = StringLookup.Fit(["42", "7", "100", "7"]);
        Assert.Equal(["100", "42", "7"], lookup.Vocabulary);
        Assert.Equal(1, lookup["100"]);
        Assert.Equal(3, lookup["7"]);
        Assert.Equal(0, lookup["999"]);
        Assert.Equal(4, lookup.Cardinality);
    }

    [Fact]
    public void UserId_UnknownUser_GetsOutOfVocabularyRow()
    {
        var feature = UserIdFeature.Fit([new QueryInput("5", 0), new QueryInput("3", 0)]);
        Span<int> index = stackalloc int[1];
        feature.Encode(new QueryInput("3", 0), index, []);
        Assert.Equal(1, index[0]);
        feature.Encode(new QueryInput("unknown", 0), index, []);
        Assert.Equal(0, index[0]);
    }

    [Fact]
    public void TimestampBuckets_FollowKerasDiscretization_AtEdges()
    {
        // linspace(0, 10, 3) = [0, 5, 10]; index = number of boundaries <= value.
        var buckets = TimestampBuckets.Fit([new QueryInput("u", 0), new QueryInput("u", 10)], count: 3);
        Assert.Equal([0f, 5f, 10f], buckets.Boundaries);
        Assert.Equal(0, buckets.Bucket(-1));
        Assert.Equal(1, buckets.Bucket(0));
        Assert.Equal(1, buckets.Bucket(4));
        Assert.Equal(2, buckets.Bucket(5));
        Assert.Equal(3, buckets.Bucket(10));
        Assert.Equal(3, buckets.Bucket(1_000_000)); // beyond the training range: the edge bucket
        Assert.Equal(4, buckets.Cardinality);
    }

    [Fact]
    public void TimestampBuckets_CompareInFloat32_AsTensorFlowBucketize()
    {
        // 874724710 is not a float32; it rounds to 874724736, so a boundary at 874724720 (float32 874724736) holds it.
        var buckets = new TimestampBuckets([874724720f]);
        Assert.Equal(1, buckets.Bucket(874724710));
    }

    [Fact]
    public void TimestampNormalization_UsesPopulationVariance()
    {
        var norm = TimestampNormalization.Fit([new QueryInput("u", 1), new QueryInput("u", 3)]);
        Assert.Equal(2f, norm.Mean);
        Assert.Equal(1f, norm.Variance); // population: ((1-2)² + (3-2)²) / 2
        Assert.Equal(1f, norm.Normalize(3));
        Assert.Equal(-3f, norm.Normalize(-1));
    }

    [Theory]
    [InlineData("Toy Story (1995)", new[] { "toy", "story", "1995" })]
    [InlineData("Twelve Monkeys (a.k.a. 12 Monkeys)", new[] { "twelve", "monkeys", "aka", "12", "monkeys" })]
    [InlineData("Wallace & Gromit: The Best of Aardman", new[] { "wallace", "gromit", "the", "best", "of", "aardman" })]
    [InlineData("Jeanne et Paul \tÉTÉ  (1996)", new[] { "jeanne", "et", "paul", "ÉtÉ", "1996" })] // ASCII-only lowercase, as tf.strings.lower
    [InlineData("it's", new[] { "its" })]
    public void TitleTokenizer_StandardizesLikeKerasTextVectorization(string title, string[] tokens)
    {
        Assert.Equal(tokens, TitleTokenizer.Tokens(title));
    }

    [Fact]
    public void TitleTokenizer_OrdersVocabularyByCountThenBytesDescending_WithPaddingAndOov()
    {
        var tokenizer = TitleTokenizer.Fit(["b a", "a c", "a b"], maxTokens: 10);
        // counts: a=3, b=2, c=1
        Assert.Equal(["", "[UNK]", "a", "b", "c"], tokenizer.Vocabulary);
        Assert.Equal([2, 4, 1], tokenizer.Encode("a c zebra"));
        var ties = TitleTokenizer.Fit(["x y z"], maxTokens: 4);
        Assert.Equal(["", "[UNK]", "z", "y"], ties.Vocabulary); // ties: token bytes descending, capped
    }

    [Fact]
    public void TitleText_PadsToWidth_AndTruncatesLongerTitles()
    {
        var movies = new[] { new Movie(1, "A B C", [], null), new Movie(2, "B", [], null) };
        var feature = TitleTextFeature.Fit(movies);
        Assert.Equal(3, feature.Width);
        var indices = new int[3];
        feature.Encode(new Movie(3, "B", [], null), indices, []);
        Assert.Equal([feature.Tokenizer.Encode("B")[0], 0, 0], indices);
        feature.Encode(new Movie(4, "A B C D E", [], null), indices, []);
        Assert.DoesNotContain(0, indices);
    }

    [Fact]
    public void CalendarFeatures_GiveHourAndWeekday_InTheChosenTimeZone()
    {
        long saturdayLateUtc = new DateTimeOffset(1998, 4, 18, 23, 30, 0, TimeSpan.Zero).ToUnixTimeSeconds(); // a Saturday
        var hour = new CalendarFeature(CalendarFeature.HourOfDay, "UTC");
        var day = new CalendarFeature(CalendarFeature.DayOfWeek, "UTC");
        Assert.Equal(1 + 23, hour.Index(saturdayLateUtc));
        Assert.Equal(1 + 6, day.Index(saturdayLateUtc));
        Assert.Equal(1 + 0, hour.Index(0));               // 1970-01-01T00:00Z
        Assert.Equal(1 + 4, day.Index(0));                // a Thursday
        var paris = new CalendarFeature(CalendarFeature.DayOfWeek, "Europe/Paris");
        Assert.Equal(1 + 0, paris.Index(saturdayLateUtc)); // already Sunday 01:30 in Paris (CEST)
        Assert.Equal(25, hour.Cardinality);
        using var dir = new TempDirectory();
        var loaded = FeatureCatalog.LoadQuery(paris.Save(dir.Path), dir.Path);
        var index = new int[1];
        loaded.Encode(new QueryInput("u", saturdayLateUtc), index, []);
        Assert.Equal(1, index[0]);
    }

    [Fact]
    public void FeatureCatalog_ExpandsTimestampAlias_AndRejectsUnknownNames()
    {
        Assert.Equal(["user_id", "timestamp_bucket", "timestamp_norm"], FeatureCatalog.ParseQuery("user_id,timestamp"));
        Assert.Equal("user_id,timestamp", FeatureCatalog.Describe(FeatureCatalog.ParseQuery("user_id, timestamp")));
        var error = Assert.Throws<ArgumentException>(() => FeatureCatalog.ParseQuery("user_id,zodiac"));
        Assert.Contains("zodiac", error.Message);
    }

    [Fact]
    public void Features_RoundTripThroughTheirSavedState()
    {
        using var dir = new TempDirectory();
        var rows = new[] { new QueryInput("1", 100), new QueryInput("2", 200), new QueryInput("3", 300) };
        foreach (var name in FeatureCatalog.ParseQuery("user_id,timestamp"))
        {
            var fitted = FeatureCatalog.FitQuery(name, rows, new FeatureOptions(TimestampBuckets: 10));
            var loaded = FeatureCatalog.LoadQuery(fitted.Save(dir.Path), dir.Path);
            var a = new int[1];
            var b = new int[1];
            var x = new float[1];
            var y = new float[1];
            foreach (var probe in rows.Append(new QueryInput("9", 50)).Append(new QueryInput("1", 999)))
            {
                fitted.Encode(probe, a, x);
                loaded.Encode(probe, b, y);
                Assert.Equal(a, b);
                Assert.Equal(x, y);
            }
        }
    }
}
