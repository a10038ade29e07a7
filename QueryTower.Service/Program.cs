using Retrieval.QueryTower.Extensions;
using Retrieval.QueryTower.Grpc;
using Retrieval.QueryTower.Recommendation;
using Retrieval.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
builder.AddServiceDefaults(QueryMetrics.MeterName);
builder.AddQueryTower();

var app = builder.Build();
app.MapGrpcService<QueryTowerService>();
app.MapServiceDefaults();
app.Run();
