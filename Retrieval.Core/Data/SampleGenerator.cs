using System.Globalization;
using System.Text;

namespace Retrieval.Core.Data;

/// <summary>Sizes and seed of a generated sample data set.</summary>
public sealed record SampleOptions(int Users = 600, int Movies = 800, int Ratings = 40_000, int Seed = 1)
{
    public void Validate()
    {
        if (Users < 2 || Movies < 10 || Ratings < 100)
        {
            throw new ArgumentException("a sample needs at least 2 users, 10 movies and 100 ratings");
        }
        if (Ratings > (long)Users * Movies / 2)
        {
            throw new ArgumentException($"{Ratings} ratings do not fit {Users} users x {Movies} movies (at most half of all pairs)");
        }
    }
}

/// <summary>
/// Writes MovieLens-100k-format files (u.data, u.item, u.user, u.genre) with planted structure, so that a
/// model can learn something and the timestamp feature measurably helps:
/// users have tastes over latent topics (each movie has one), movies are released during the period and
/// their popularity decays after release, and each user rates in short bursts of time, choosing among the
/// movies that are popular then. Each user comes back in a few bursts across the period, so a user's id alone
/// cannot tell when they rate: the timestamp can. Titles carry topic words, so the title text is informative too.
/// </summary>
public static class SampleGenerator
{
    private const int Topics = 8;
    private const int BurstsPerUser = 3;
    private static readonly DateTime Start = new(1997, 9, 20, 0, 0, 0, DateTimeKind.Utc);
    private static readonly DateTime End = new(1998, 4, 22, 0, 0, 0, DateTimeKind.Utc);

    private static readonly string[] Genres =
    [
        "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
        "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    ];

    // Title words per topic; a few Latin-1 letters so loaders and tokenisers meet them as in u.item.
    private static readonly string[][] TopicWords =
    [
        ["Star", "Galaxy", "Robot", "Planet", "Orbit", "Laser"],
        ["Love", "Heart", "Kiss", "Wedding", "Paris", "Café"],
        ["Murder", "Night", "Shadow", "Detective", "Crime", "Noir"],
        ["Family", "Dog", "Christmas", "Little", "Friends", "Home"],
        ["War", "Soldier", "Battle", "Glory", "Honor", "Front"],
        ["Ghost", "Blood", "Scream", "Dead", "Curse", "Haunted"],
        ["Laugh", "Crazy", "Party", "Wild", "Funny", "Señor"],
        ["Horse", "West", "Gun", "Sheriff", "Desert", "Frontier"],
    ];

    private static readonly int[][] TopicGenres =
    [
        [15, 1], [14, 5], [6, 16, 10], [4, 3, 5], [17, 8, 1], [11, 16], [5, 12], [18, 2],
    ];

    private static readonly string[] Occupations =
        ["student", "engineer", "educator", "programmer", "writer", "artist", "doctor", "retired", "other"];

    public static void Write(string directory, SampleOptions options)
    {
        options.Validate();
        Directory.CreateDirectory(directory);
        var rng = new Random(options.Seed);
        long start = new DateTimeOffset(Start).ToUnixTimeSeconds();
        long end = new DateTimeOffset(End).ToUnixTimeSeconds();
        double span = end - start;

        // Movies: a topic, a release time inside the period (a third were out before it), a base popularity.
        var topic = new int[options.Movies];
        var release = new double[options.Movies];
        var basePopularity = new double[options.Movies];
        var item = new StringBuilder();
        for (int m = 0; m < options.Movies; m++)
        {
            topic[m] = rng.Next(Topics);
            release[m] = rng.NextDouble() < 0.33 ? -span * rng.NextDouble() : span * rng.NextDouble();
            basePopularity[m] = 1.0 / Math.Pow(1 + rng.Next(options.Movies), 0.8);
            var words = TopicWords[topic[m]];
            var other = TopicWords[rng.Next(Topics)];
            var releaseDate = DateTimeOffset.FromUnixTimeSeconds(start + (long)Math.Max(release[m], -span)).UtcDateTime;
            string title = $"{words[rng.Next(words.Length)]} {other[rng.Next(other.Length)]} {m + 1} ({releaseDate.Year})";
            var flags = new int[Genres.Length];
            foreach (var g in TopicGenres[topic[m]])
            {
                if (rng.NextDouble() < 0.7)
                {
                    flags[g] = 1;
                }
            }
            if (flags.Sum() == 0)
            {
                flags[TopicGenres[topic[m]][0]] = 1;
            }
            item.Append(CultureInfo.InvariantCulture, $"{m + 1}|{title}|{releaseDate.ToString("dd-MMM-yyyy", CultureInfo.InvariantCulture)}||");
            item.Append(CultureInfo.InvariantCulture, $"http://example.invalid/movie/{m + 1}|{string.Join('|', flags)}\n");
        }

        // Users: a taste over topics (mostly one or two), an activity level, a short burst of rating time.
        var taste = new double[options.Users][];
        var activity = new double[options.Users];
        var burstStart = new double[options.Users][];
        var user = new StringBuilder();
        for (int u = 0; u < options.Users; u++)
        {
            taste[u] = new double[Topics];
            int favourite = rng.Next(Topics), second = rng.Next(Topics);
            for (int t = 0; t < Topics; t++)
            {
                taste[u][t] = 0.2 + (t == favourite ? 6 : 0) + (t == second ? 2.5 : 0);
            }
            activity[u] = 1.0 / Math.Pow(1 + rng.Next(options.Users), 0.6);
            burstStart[u] = [.. Enumerable.Range(0, BurstsPerUser).Select(_ => rng.NextDouble() * span * 0.97)];
            int age = 15 + rng.Next(50);
            user.Append(CultureInfo.InvariantCulture,
                $"{u + 1}|{age}|{(rng.Next(2) == 0 ? "M" : "F")}|{Occupations[rng.Next(Occupations.Length)]}|{10000 + rng.Next(89999)}\n");
        }

        var userCumulative = Cumulative(activity);
        var rated = new HashSet<long>();
        var data = new StringBuilder();
        var weights = new double[options.Movies];
        for (int r = 0; r < options.Ratings; r++)
        {
            int u = Draw(userCumulative, rng);
            double t = Math.Min(span - 1, burstStart[u][rng.Next(BurstsPerUser)] + rng.NextDouble() * span * 0.03);
            for (int m = 0; m < options.Movies; m++)
            {
                // Popularity rises at release and decays over about three weeks; before release a movie is rarely seen.
                double age = t - release[m];
                double trend = age < 0 ? 0.01 : 0.05 + Math.Exp(-age / (span / 8));
                weights[m] = basePopularity[m] * trend * taste[u][topic[m]];
            }
            var cumulative = Cumulative(weights);
            int movie = -1;
            for (int attempt = 0; attempt < 50; attempt++)
            {
                int candidate = Draw(cumulative, rng);
                if (rated.Add(((long)u << 32) | (uint)candidate))
                {
                    movie = candidate;
                    break;
                }
            }
            if (movie < 0)
            {
                r--; // this user has seen what they like; draw another user
                continue;
            }
            int stars = Math.Clamp((int)Math.Round(2.5 + taste[u][topic[movie]] / 4 + rng.NextDouble() * 2 - 1), 1, 5);
            data.Append(CultureInfo.InvariantCulture, $"{u + 1}\t{movie + 1}\t{stars}\t{start + (long)t}\n");
        }

        var genres = new StringBuilder();
        for (int g = 0; g < Genres.Length; g++)
        {
            genres.Append(CultureInfo.InvariantCulture, $"{Genres[g]}|{g}\n");
        }
        File.WriteAllText(Path.Combine(directory, "u.data"), data.ToString(), Encoding.ASCII);
        File.WriteAllText(Path.Combine(directory, "u.item"), item.ToString(), Encoding.Latin1);
        File.WriteAllText(Path.Combine(directory, "u.user"), user.ToString(), Encoding.Latin1);
        File.WriteAllText(Path.Combine(directory, "u.genre"), genres.ToString(), Encoding.Latin1);
        File.WriteAllText(Path.Combine(directory, "README"),
            $"Generated by Retrieval.Grpc (trainer generate-sample): {options.Users} users, {options.Movies} movies, " +
            $"{options.Ratings} ratings, seed {options.Seed}. Synthetic data in the MovieLens 100k layout; not MovieLens.\n");
    }

    private static double[] Cumulative(double[] weights)
    {
        var c = new double[weights.Length];
        double sum = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            sum += weights[i];
            c[i] = sum;
        }
        return c;
    }

    private static int Draw(double[] cumulative, Random rng)
    {
        double x = rng.NextDouble() * cumulative[^1];
        int i = Array.BinarySearch(cumulative, x);
        return Math.Min(i < 0 ? ~i : i, cumulative.Length - 1);
    }
}
