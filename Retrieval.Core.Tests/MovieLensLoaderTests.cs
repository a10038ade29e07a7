using System.Text;
using Retrieval.Core.Data;

namespace Retrieval.Core.Tests;

public class MovieLensLoaderTests
{
    private static void Write(TempDirectory dir, string name, string text, Encoding? encoding = null) =>
        File.WriteAllText(dir.File(name), text, encoding ?? Encoding.UTF8);

    private static void Write100k(TempDirectory dir, string data)
    {
        Write(dir, "u.item", "1|Café Society (1995)|01-Jan-1995||http://x|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n" +
            "2|Heat (1995)|15-Dec-1995||http://y|0|1|0|0|0|0|1|0|0|0|0|0|0|0|0|0|1|0|0\n", Encoding.Latin1);
        Write(dir, "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n", Encoding.Latin1);
        Write(dir, "u.data", data, Encoding.ASCII);
    }

    [Fact]
    public void Load100k_ReadsLatin1Titles_Genres_Users_AndRatings()
    {
        using var dir = new TempDirectory();
        Write100k(dir, "1\t1\t5\t881250949\n2\t2\t3\t891717742\n\n");
        var log = new List<string>();
        var data = MovieLensLoader.Load(dir.Path, log.Add);
        Assert.Equal(MovieLensFormat.Ml100k, data.Format);
        Assert.Equal("Café Society (1995)", data.Movies[0].Title);
        Assert.Equal(["Comedy"], data.Movies[0].Genres);
        Assert.Equal(["Action", "Crime", "Thriller"], data.Movies[1].Genres);
        Assert.Equal(1995, data.Movies[1].ReleaseYear);
        Assert.Equal("F", data.Users["2"].Gender);
        Assert.Equal(2, data.Ratings.Count);
        Assert.Equal(891717742, data.Ratings.Timestamps[1]);
        Assert.Equal([0, 1], data.MovieRows());
        Assert.Contains(log, l => l.Contains("skipped 1 blank line"));
    }

    [Theory]
    [InlineData("1\t1\t5\n", "u.data:1", "expected 4 fields")]
    [InlineData("1\t1\t5\t881250949\n1\tx\t5\t881250949\n", "u.data:2", "movie id must be an integer")]
    [InlineData("1\t9\t5\t881250949\n", "u.data:1", "movie id 9 is not in the movie catalogue")]
    [InlineData("1\t1\tfive\t881250949\n", "u.data:1", "rating must be a number")]
    [InlineData("1\t1\t5\t-3\n", "u.data:1", "timestamp must be a non-negative integer")]
    public void Load100k_MalformedLine_NamesFileLineAndProblem(string data, string where, string problem)
    {
        using var dir = new TempDirectory();
        Write100k(dir, data);
        var error = Assert.Throws<DataFormatException>(() => MovieLensLoader.Load(dir.Path));
        Assert.Contains(where, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void Load1m_ReadsDoubleColonFiles_AndOccupationCodes()
    {
        using var dir = new TempDirectory();
        Write(dir, "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n", Encoding.Latin1);
        Write(dir, "users.dat", "1::F::1::10::48067\n", Encoding.Latin1);
        Write(dir, "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n", Encoding.Latin1);
        var data = MovieLensLoader.Load(dir.Path);
        Assert.Equal(MovieLensFormat.Ml1m, data.Format);
        Assert.Equal(["Animation", "Children's", "Comedy"], data.Movies[0].Genres);
        Assert.Equal("K-12 student", data.Users["1"].Occupation);
        Assert.Equal(2, data.Ratings.Count);
    }

    [Fact]
    public void LoadCsv_HandlesHeaderQuotedTitlesAndFractionalRatings()
    {
        using var dir = new TempDirectory();
        Write(dir, "movies.csv", "movieId,title,genres\n1,\"American President, The (1995)\",Comedy|Drama|Romance\n2,Heat (1995),(no genres listed)\n");
        Write(dir, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n2,2,3.0,964981247\n");
        var data = MovieLensLoader.Load(dir.Path);
        Assert.Equal(MovieLensFormat.Csv, data.Format);
        Assert.Equal("American President, The (1995)", data.Movies[0].Title);
        Assert.Empty(data.Movies[1].Genres);
        Assert.Equal(4.5f, data.Ratings.Values[0]);
    }

    [Fact]
    public void LoadCsv_UnterminatedQuote_IsAnError()
    {
        using var dir = new TempDirectory();
        Write(dir, "movies.csv", "movieId,title,genres\n1,\"Broken (1995),Comedy\n");
        Write(dir, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,964982703\n");
        var error = Assert.Throws<DataFormatException>(() => MovieLensLoader.Load(dir.Path));
        Assert.Contains("movies.csv:2", error.Message);
    }

    [Fact]
    public void Load_EmptyFolder_SaysWhichFilesAreExpected()
    {
        using var dir = new TempDirectory();
        var error = Assert.Throws<DataFormatException>(() => MovieLensLoader.Load(dir.Path));
        Assert.Contains("u.data", error.Message);
        Assert.Contains("ratings.csv", error.Message);
    }

    [Fact]
    public void GeneratedSample_LoadsAsMovieLens100k_WithRequestedSizes()
    {
        using var dir = new TempDirectory();
        SampleGenerator.Write(dir.Path, new SampleOptions(Users: 50, Movies: 60, Ratings: 1000, Seed: 3));
        var data = MovieLensLoader.Load(dir.Path);
        Assert.Equal(1000, data.Ratings.Count);
        Assert.Equal(60, data.Movies.Count);
        Assert.Equal(50, data.Users.Count);
        Assert.Contains(data.Movies, m => m.Title.Any(c => c > 127)); // Latin-1 letters survive the round trip
        var pairs = new HashSet<(string, int)>();
        for (int i = 0; i < data.Ratings.Count; i++)
        {
            Assert.True(pairs.Add((data.Ratings.UserIds[i], data.Ratings.MovieIds[i])), "a user rates a movie once");
        }
    }

    [Fact]
    public void Splits_RandomIsSeededPartition_ChronologicalTrainsOnTheEarliest()
    {
        var ratings = new RatingTable(["a", "b", "c", "d", "e"], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [50, 10, 40, 20, 30]);
        var random = Split.Create(ratings, SplitKind.Random, seed: 7);
        Assert.Equal(4, random.Train.Length);
        Assert.Equal([0, 1, 2, 3, 4], random.Train.Concat(random.Test).Order());
        Assert.Equal(random.Train, Split.Create(ratings, SplitKind.Random, seed: 7).Train);
        var chrono = Split.Create(ratings, SplitKind.Chronological);
        Assert.Equal([1, 3, 4, 2], chrono.Train);
        Assert.Equal([0], chrono.Test);
    }
}
